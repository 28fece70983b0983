"""Tests for launch/: the TPU pod launcher's dry run (snapshot), quoting of every value that
reaches a local or remote shell, the parallel worker runner, and a real two-process CPU launch
of the trainer."""

import io
import json
import os
import shlex
import subprocess
import sys
import textwrap
import time

import pytest

from launch import local, tpu, workers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNAPSHOT = os.path.join(ROOT, "tests", "snapshots", "tpu_launch_dry_run.txt")
# Every character a shell would act on, and runs of spaces.
NASTY = "; $(touch PWNED) `touch PWNED` 'single' \"double\" a  b \\ $HOME *"

POD_ARGS = ["launch", "--name=ponder-v4", "--zone=us-central2-b", "--accelerator=v4-32",
            "--queued", "--slices=2", "--spot", "--project=my-project",
            "--env=LIBTPU_INIT_ARGS=--xla_tpu_enable_async_collective_fusion=true", "--dry-run",
            "--", "ponder-train", "--config=configs/demo.py",
            "--workdir=gs://my-bucket/runs/demo-v4", "--config.train.steps=20000"]


def _dry_run(args) -> str:
  out = io.StringIO()
  tpu.main(args, out=out)
  return out.getvalue()


def test_tpu_dry_run_matches_snapshot():
  """To update after an intended change: python launch/tpu.py <POD_ARGS> > the snapshot."""
  with open(SNAPSHOT, encoding="utf-8") as f:
    expected = f.read()
  assert _dry_run(POD_ARGS) == expected


def test_tpu_dry_run_is_deterministic_and_runs_nothing(tmp_path):
  log_dir = tmp_path / "logs"
  args = [a for a in POD_ARGS if a != "--slices=2"]
  args.insert(1, f"--log-dir={log_dir}")
  first, second = _dry_run(args), _dry_run(args)
  assert first == second
  assert not log_dir.exists()  # dry run: not even the tarball directory
  # One slice of v4-32 = 4 hosts: 4 installs and 4 runs, no dcn override added.
  assert first.count("--command=cd ponder-jax") == 4
  assert "mesh.dcn" not in first
  assert "--node-id=ponder-v4" in first


@pytest.mark.parametrize("accelerator,hosts", [
    ("v4-8", 1), ("v4-32", 4), ("v5p-64", 8), ("v5litepod-8", 1), ("v5litepod-16", 4),
    ("v5litepod-256", 64), ("v6e-32", 8), ("v3-32", 4), ("v2-8", 1)])
def test_hosts_per_slice(accelerator, hosts):
  assert tpu.hosts_per_slice(accelerator) == hosts


@pytest.mark.parametrize("extra,message", [
    (["--slices=2"], "--slices=2 needs --queued"),
    (["--queued", "--preemptible"], "--preemptible"),
    (["--accelerator=h100-8"], "--accelerator='h100-8'"),
    (["--code=git"], "--code=git needs --repo-url"),
    (["--remote-dir=../x;rm"], "--remote-dir"),
    (["--env=NOEQUALS"], "--env='NOEQUALS'"),
])
def test_tpu_bad_options_name_the_option(extra, message, capsys):
  with pytest.raises(SystemExit) as e:
    tpu.main(["run", "--name=p", "--zone=z", "--dry-run", *extra, "--", "true"])
  assert e.value.code == 2
  assert message in capsys.readouterr().err


def _fake_venv(home, program: str) -> None:
  """~/ponder-jax with an activate script and `program` that records its argv as JSON."""
  bin_dir = home / "ponder-jax" / ".venv" / "bin"
  bin_dir.mkdir(parents=True)
  (bin_dir / "activate").write_text('PATH="$PWD/.venv/bin:$PATH"\n')
  script = bin_dir / program
  script.write_text(textwrap.dedent(f"""\
      #!{sys.executable}
      import json, os, sys
      with open(os.path.join(os.environ["HOME"], "argv.json"), "w") as f:
        json.dump({{"argv": sys.argv[1:], "env": os.environ.get("MY_FLAGS")}}, f)
      """))
  script.chmod(0o755)


def test_remote_command_delivers_values_literally(tmp_path):
  """The exact --command string of the ssh step, run by bash as the remote login shell would."""
  override = f"--config.data.vocab={NASTY}"
  out = _dry_run(["run", "--name=p", "--zone=z", "--accelerator=v4-8", "--dry-run",
                  f"--env=MY_FLAGS={NASTY}", "--", "ponder-train", "--config=configs/demo.py",
                  override])
  ssh_line = [line for line in out.splitlines() if line.startswith("gcloud")][0]
  argv = shlex.split(ssh_line)  # what gcloud receives (the line is also valid shell)
  command = [a for a in argv if a.startswith("--command=")][0].split("=", 1)[1]
  home = tmp_path / "home"
  _fake_venv(home, "ponder-train")
  result = subprocess.run(["bash", "-c", command], cwd=home, env={**os.environ, "HOME": str(home)},
                          capture_output=True, text=True, timeout=30, check=False)
  assert result.returncode == 0, result.stderr
  got = json.loads((home / "argv.json").read_text())
  assert got["argv"] == ["--config=configs/demo.py", override]
  assert got["env"] == NASTY
  assert not list(tmp_path.rglob("PWNED"))
  assert (home / "ponder-jax" / "run.pid").read_text().strip().isdigit()


def test_local_dry_run_lines_deliver_values_literally(tmp_path):
  echo = tmp_path / "echo_argv.py"
  echo.write_text(textwrap.dedent("""\
      import json, os, sys
      out = os.path.join(os.path.dirname(__file__), "argv-%s.json" % sys.argv[-1])
      with open(out, "w") as f:
        json.dump({"argv": sys.argv[1:], "platforms": os.environ.get("JAX_PLATFORMS")}, f)
      """))
  override = f"--config.data.vocab={NASTY}"
  group = local.plan([sys.executable, str(echo), override], num_processes=2, port=1234,
                     log_dir=str(tmp_path / "logs"))
  for worker in group:  # the printed line, through a real shell
    subprocess.run(["bash", "-c", worker.shell_line()], cwd=tmp_path, check=True, timeout=30)
  for i in range(2):
    got = json.loads((tmp_path / f"argv---process_id={i}.json").read_text())
    assert got["argv"] == [override, "--coordinator_address=127.0.0.1:1234",
                           "--num_processes=2", f"--process_id={i}"]
    assert got["platforms"] == "cpu"
  assert not list(tmp_path.rglob("PWNED"))


def test_local_plan_splits_gpus_and_sets_cpu_devices():
  group = local.plan(["ponder-train", "--workdir=runs/x"], num_processes=2, gpus=8, port=1)
  assert [w.env["CUDA_VISIBLE_DEVICES"] for w in group] == ["0,1,2,3", "4,5,6,7"]
  assert "JAX_PLATFORMS" not in group[0].env
  assert group[1].log == os.path.join("runs/x", "logs", "process-1.log")
  single = local.plan(["ponder-train"], gpus=8, port=1)
  assert "CUDA_VISIBLE_DEVICES" not in single[0].env  # one process drives every local GPU
  cpu = local.plan(["ponder-train"], num_processes=2, cpu_devices=4, port=1)
  assert "--xla_force_host_platform_device_count=4" in cpu[0].env["XLA_FLAGS"]
  with pytest.raises(ValueError, match="needs 12 GPUs"):
    local.plan(["ponder-train"], num_processes=3, gpus=8, gpus_per_process=4, port=1)


def test_run_all_fails_fast_and_keeps_one_log_per_worker(tmp_path):
  group = [
      workers.Worker("fails", (sys.executable, "-c", "print('boom'); raise SystemExit(3)"),
                     str(tmp_path / "a.log")),
      workers.Worker("sleeps", (sys.executable, "-c", "import time; print('up', flush=True); "
                                "time.sleep(120)"), str(tmp_path / "b.log")),
  ]
  start = time.monotonic()
  codes = workers.run_all(group, echo=None, grace_s=5)
  assert time.monotonic() - start < 30
  assert codes["fails"] == 3
  assert codes["sleeps"] != 0  # stopped by SIGTERM
  assert "boom" in (tmp_path / "a.log").read_text()


TINY_TRAIN_CONFIG = os.path.join(ROOT, "tests", "configs", "tiny.py")


def test_local_two_process_cpu_launch_trains_and_checkpoints(tmp_path):
  config = TINY_TRAIN_CONFIG
  workdir = tmp_path / "run"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device per process
  env["JAX_DEFAULT_PRNG_IMPL"] = "rbg"  # as conftest: compiles faster
  result = subprocess.run(
      [sys.executable, "launch/local.py", "--num-processes=2", "--", sys.executable, "-m",
       "ponder_jax.cli", f"--config={config}", f"--workdir={workdir}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
  logs = {i: (workdir / "logs" / f"process-{i}.log").read_text() for i in range(2)}
  assert result.returncode == 0, logs[0][-3000:] + logs[1][-3000:]
  assert "no GPU found; running 2 process(es) on the CPU" in result.stderr
  for i in range(2):
    assert f"Joined the job as process {i} of 2 (1 local / 2 global devices)" in logs[i]
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train] == [1, 2, 3]  # written once, by process 0
  assert all(0 < r["loss"] < 10 for r in train)
  assert sorted(os.listdir(workdir / "checkpoints")) == ["3"]


def _fake_pod(tmp_path, monkeypatch, hosts: int, fail_worker: int = -1):
  """A `gcloud` on PATH whose `tpu-vm ssh --worker=i --command=C` runs `bash -c C` in host i's
  home, where ponder-jax/.venv holds a `ponder-train` that reports which host ran it."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  gcloud = bin_dir / "gcloud"
  gcloud.write_text(textwrap.dedent(f"""\
      #!{sys.executable}
      import os, subprocess, sys
      args = sys.argv[1:]
      assert args[:4] == ["compute", "tpus", "tpu-vm", "ssh"], args
      worker = [a for a in args if a.startswith("--worker=")][0].split("=", 1)[1]
      command = [a for a in args if a.startswith("--command=")][0].split("=", 1)[1]
      home = os.path.join({str(tmp_path)!r}, "hosts", worker)
      env = dict(os.environ, HOME=home, FAKE_WORKER=worker)
      sys.exit(subprocess.run(["bash", "-c", command], cwd=home, env=env).returncode)
      """))
  gcloud.chmod(0o755)
  for w in range(hosts):
    venv = tmp_path / "hosts" / str(w) / "ponder-jax" / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "activate").write_text('PATH="$PWD/.venv/bin:$PATH"\n')
    program = venv / "ponder-train"
    program.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import os, sys
        print("hello from host", os.environ["FAKE_WORKER"], sys.argv[1:], flush=True)
        sys.exit(5 if os.environ["FAKE_WORKER"] == "{fail_worker}" else 0)
        """))
    program.chmod(0o755)
  monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_tpu_run_writes_one_log_per_host(tmp_path, monkeypatch, capsys):
  _fake_pod(tmp_path, monkeypatch, hosts=4)
  log_dir = tmp_path / "logs"
  tpu.main(["run", "--name=p", "--zone=z", "--accelerator=v4-32", f"--log-dir={log_dir}", "--",
            "ponder-train", "--config=configs/demo.py"])
  for w in range(4):
    log = (log_dir / "run" / f"slice-0-worker-{w}.log").read_text()
    assert f"hello from host {w} ['--config=configs/demo.py']" in log
  assert "hello from host 0" in capsys.readouterr().out  # host 0 is echoed


def test_tpu_run_names_the_failing_host(tmp_path, monkeypatch):
  _fake_pod(tmp_path, monkeypatch, hosts=4, fail_worker=2)
  with pytest.raises(SystemExit) as e:
    tpu.main(["run", "--name=p", "--zone=z", "--accelerator=v4-32",
              f"--log-dir={tmp_path / 'logs'}", "--", "ponder-train"])
  assert "run on every host failed on slice 0 worker 2" in str(e.value.code)
