"""Cloud TPU pods: create / describe / delete a TPU VM or a queued resource, copy and install the
code on every host, run the same command on every host with one local log file per host.

    python launch/tpu.py launch --name=pod --zone=us-central2-b --accelerator=v4-32 --spot \
        -- ponder-train --config=configs/demo.py --workdir=gs://BUCKET/runs/demo
    python launch/tpu.py {create|describe|setup|run|stop|delete} --name=pod --zone=... [...]

Every step is a `gcloud compute tpus ...` command built as an argument list; `--dry-run` prints
the exact commands (as copy-pasteable shell lines) and runs nothing.

How the code gets there (`--code`): `tarball` (default) packs `git archive <--ref>` (commit
your changes first) and copies it with `tpu-vm scp --worker=all`; `git` clones `--repo-url`
at `--ref` on every host. Either way every host gets `~/<remote-dir>` with a venv `.venv`
(`pip install -c constraints.txt -e . 'jax[tpu]'`; python3.11 from apt if the image lacks it).

Logs: `run` starts one `gcloud ... ssh NODE --worker=i --command=...` per host, in parallel,
and writes each one's output to `<log-dir>/run/slice-<s>-worker-<w>.log` (worker 0 of slice 0
is also echoed here). One ssh per host rather than `--worker=all`, so the logs never interleave
and a failing host is named; if one host fails, the other ssh sessions are ended and `stop`
sends SIGTERM to the trainer on every host (it saves a checkpoint and exits).

Multi-slice: `--slices=N` (queued resources only: `--node-count=N --node-prefix=NAME`, nodes
NAME-0 ... NAME-<N-1>). The TPU runtime sets MEGASCALE_* on every host, JAX detects the job, and
unless the command already sets `--config.mesh.dcn.*`, `--config.mesh.dcn.data=N` is added
(data parallel across slices over the data-centre network).

Quoting: every value that reaches the remote shell (the command, its overrides, `--env`) is
`shlex.quote`d; local commands are argument lists and never go through a local shell.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Sequence

if __package__ in (None, ""):  # run as `python launch/tpu.py`: make `launch` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launch import workers  # pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Default runtime (software) version per TPU generation.
RUNTIMES = {"v2": "tpu-ubuntu2204-base", "v3": "tpu-ubuntu2204-base",
            "v4": "tpu-ubuntu2204-base", "v5litepod": "v2-alpha-tpuv5-lite",
            "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}
POLL_S = 30


class LaunchError(ValueError):
  """A bad launcher option; the message names it."""


def hosts_per_slice(accelerator: str) -> int:
  """TPU VM hosts of one slice of `accelerator` (e.g. v4-32 -> 4, v5litepod-16 -> 4)."""
  generation, _, size = accelerator.partition("-")
  if generation not in RUNTIMES or not size.isdigit() or int(size) < 1:
    raise LaunchError(f"--accelerator={accelerator!r}: expected <generation>-<size> with "
                      f"generation in {sorted(RUNTIMES)} (e.g. v4-32, v5litepod-16); pass "
                      "--workers for other types")
  n = int(size)
  if generation in ("v2", "v3", "v4", "v5p"):
    return max(1, n // 8)  # the size counts TensorCores: 8 per host
  return 1 if n <= 8 else n // 4  # v5e / v6e count chips: 8 on a single host, else 4 per host


@dataclasses.dataclass(frozen=True)
class Pod:
  """What the launcher needs to know about one TPU job."""
  name: str
  zone: str
  project: str
  accelerator: str
  runtime_version: str
  slices: int
  queued: bool
  spot: bool
  preemptible: bool
  workers: int  # hosts per slice
  internal_ip: bool
  remote_dir: str
  log_dir: str
  code: str
  ref: str
  repo_url: str
  python: str
  env: tuple[tuple[str, str], ...]

  @property
  def nodes(self) -> list[str]:
    if self.queued and self.slices > 1:
      return [f"{self.name}-{i}" for i in range(self.slices)]
    return [self.name]

  @property
  def tarball(self) -> str:
    return os.path.join(self.log_dir, "code.tar.gz")

  def _common(self) -> list[str]:
    flags = [f"--zone={self.zone}"]
    if self.project:
      flags.append(f"--project={self.project}")
    return flags

  def _remote(self) -> list[str]:
    return ["--internal-ip"] if self.internal_ip else []

  # gcloud commands -------------------------------------------------------------------------
  def create(self) -> list[list[str]]:
    if self.queued:
      cmd = ["gcloud", "compute", "tpus", "queued-resources", "create", self.name,
             *self._common(), f"--accelerator-type={self.accelerator}",
             f"--runtime-version={self.runtime_version}"]
      if self.slices > 1:
        cmd += [f"--node-count={self.slices}", f"--node-prefix={self.name}"]
      else:
        cmd += [f"--node-id={self.name}"]
      return [cmd + (["--spot"] if self.spot else [])]
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", "create", self.name, *self._common(),
           f"--accelerator-type={self.accelerator}", f"--version={self.runtime_version}"]
    if self.spot:
      cmd.append("--spot")
    if self.preemptible:
      cmd.append("--preemptible")
    return [cmd]

  def state(self) -> list[str]:
    """Prints the queued resource's state (ACTIVE once the TPUs are ready)."""
    return ["gcloud", "compute", "tpus", "queued-resources", "describe", self.name,
            *self._common(), "--format=value(state.state)"]

  def describe(self) -> list[list[str]]:
    if self.queued:
      return [["gcloud", "compute", "tpus", "queued-resources", "describe", self.name,
               *self._common()]]
    return [["gcloud", "compute", "tpus", "tpu-vm", "describe", self.name, *self._common()]]

  def delete(self) -> list[list[str]]:
    if self.queued:  # --force also deletes the queued resource's TPU VMs
      return [["gcloud", "compute", "tpus", "queued-resources", "delete", self.name,
               *self._common(), "--force", "--quiet"]]
    return [["gcloud", "compute", "tpus", "tpu-vm", "delete", self.name, *self._common(),
             "--quiet"]]

  def pack(self) -> list[str]:
    return ["git", "archive", "--format=tar.gz", f"--output={self.tarball}", self.ref]

  def scp(self, node: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "scp", self.tarball,
            f"{node}:{self.remote_dir}.tar.gz", "--worker=all", *self._common(), *self._remote()]

  def ssh(self, node: str, worker: int, command: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", node, f"--worker={worker}",
            *self._common(), *self._remote(), "--strict-host-key-checking=no",
            f"--command={command}"]

  # Remote shell commands (every value quoted) ------------------------------------------------
  def install_command(self) -> str:
    d, q = self.remote_dir, shlex.quote
    if self.code == "git":
      fetch = (f"(test -d {q(d)}/.git || git clone {q(self.repo_url)} {q(d)}) && cd {q(d)} && "
               f"git fetch --depth=1 origin {q(self.ref)} && git checkout --force FETCH_HEAD")
    else:
      fetch = (f"mkdir -p {q(d)} && tar -xzf {q(d + '.tar.gz')} -C {q(d)} && "
               f"rm {q(d + '.tar.gz')} && cd {q(d)}")
    py = q(self.python)
    get_python = (f"(command -v {py} >/dev/null || (sudo apt-get update -qq && "
                  f"sudo apt-get install -y -qq {py} {q(self.python + '-venv')}))")
    return " && ".join([
        fetch, get_python, f"(test -x .venv/bin/python || {py} -m venv .venv)",
        ".venv/bin/pip install -q --upgrade pip",
        ".venv/bin/pip install -q -c constraints.txt -e . 'jax[tpu]'",
        # Checks the install without starting the TPU runtime (that needs every host at once).
        ".venv/bin/python -c 'import jax, ponder_jax; print(\"jax\", jax.__version__)'"])

  def run_command(self, argv: Sequence[str]) -> str:
    """cd into the code, activate the venv, record the pid for `stop`, exec the command."""
    argv = list(argv)
    if self.slices > 1 and any(a.startswith("--config=") for a in argv) and not any(
        a.startswith("--config.mesh.dcn.") for a in argv):
      argv.append(f"--config.mesh.dcn.data={self.slices}")
    env = [f"{k}={v}" for k, v in self.env]
    program = (["env", *env] if env else []) + argv
    return (f"cd {shlex.quote(self.remote_dir)} && . .venv/bin/activate && echo $$ > run.pid && "
            f"exec {shlex.join(program)}")

  def stop_command(self) -> str:
    pid = f"{shlex.quote(self.remote_dir)}/run.pid"
    return f"if test -f {pid}; then kill -TERM \"$(cat {pid})\" 2>/dev/null || true; fi"

  def per_worker(self, phase: str, command: str) -> list[workers.Worker]:
    out = []
    for s, node in enumerate(self.nodes):
      for w in range(self.workers):
        log = os.path.join(self.log_dir, phase, f"slice-{s}-worker-{w}.log")
        out.append(workers.Worker(f"slice {s} worker {w}", tuple(self.ssh(node, w, command)),
                                  log))
    return out


# Steps -------------------------------------------------------------------------------------
class Runner:
  """Executes (or, with dry_run, prints) the steps."""

  def __init__(self, pod: Pod, dry_run: bool, out=sys.stdout):
    self.pod, self.dry_run, self.out = pod, dry_run, out

  def _say(self, text: str) -> None:
    print(text, file=self.out, flush=True)

  def one(self, title: str, argv: Sequence[str], capture: bool = False) -> str:
    self._say(f"# {title}\n{shlex.join(argv)}")
    if self.dry_run:
      return ""
    result = subprocess.run(list(argv), cwd=ROOT, check=False, text=True,
                            stdout=subprocess.PIPE if capture else None)
    if result.returncode != 0:
      raise SystemExit(f"{argv[0]} failed with exit code {result.returncode}: {shlex.join(argv)}")
    return result.stdout or ""

  def parallel(self, title: str, group: list[workers.Worker]) -> None:
    logs = os.path.dirname(group[0].log)
    self._say(f"# {title}: {len(group)} in parallel, one log per host in {logs}/")
    for worker in group:
      self._say(shlex.join(worker.argv))
    if self.dry_run:
      return
    # Paths in the commands are relative to the repository root, whatever the caller's cwd.
    group = [dataclasses.replace(w, log=os.path.join(ROOT, w.log)) for w in group]
    codes = workers.run_all(group, cwd=ROOT)
    bad = {k: v for k, v in codes.items() if v != 0}
    if bad:
      raise SystemExit(f"{title} failed on {', '.join(bad)}; logs in {logs}/. To end the "
                       f"trainer everywhere: python launch/tpu.py stop --name={self.pod.name} ...")

  def create(self) -> None:
    for cmd in self.pod.create():
      self.one(f"create {self.pod.name} ({self.pod.slices} x {self.pod.accelerator})", cmd)
    if self.pod.queued:
      self.one(f"wait until the queued resource is ACTIVE (polled every {POLL_S} s)",
               self.pod.state())
      while not self.dry_run:
        state = subprocess.run(self.pod.state(), cwd=ROOT, text=True, check=False,
                               stdout=subprocess.PIPE).stdout.strip()
        if state == "ACTIVE":
          break
        if state in ("FAILED", "SUSPENDED"):
          raise SystemExit(f"queued resource {self.pod.name} is {state}")
        self._say(f"  {self.pod.name}: {state or 'unknown'}; waiting {POLL_S} s")
        time.sleep(POLL_S)

  def setup(self) -> None:
    if self.pod.code == "tarball":
      if not self.dry_run:
        os.makedirs(os.path.join(ROOT, self.pod.log_dir), exist_ok=True)
      self.one(f"pack the code at {self.pod.ref}", self.pod.pack())
      for node in self.pod.nodes:
        self.one(f"copy it to every host of {node}", self.pod.scp(node))
    self.parallel("install on every host", self.pod.per_worker(
        "setup", self.pod.install_command()))

  def run(self, argv: Sequence[str]) -> None:
    if not argv:
      raise LaunchError("run needs the command after '--', e.g. -- ponder-train "
                        "--config=configs/demo.py --workdir=gs://BUCKET/run")
    self.parallel("run on every host", self.pod.per_worker("run", self.pod.run_command(argv)))

  def stop(self) -> None:
    self.parallel("SIGTERM the trainer on every host (it checkpoints and exits)",
                  self.pod.per_worker("stop", self.pod.stop_command()))


# Command line ------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("action", choices=["create", "describe", "setup", "run", "stop", "delete",
                                    "launch"],
                 help="launch = create + setup + run")
  p.add_argument("--name", required=True, help="TPU VM / queued resource name")
  p.add_argument("--zone", required=True, help="e.g. us-central2-b (v4), us-west4-a (v5e)")
  p.add_argument("--project", default="", help="default: gcloud's configured project")
  p.add_argument("--accelerator", default="v4-8", help="e.g. v4-32, v5litepod-16, v5p-64")
  p.add_argument("--runtime-version", default="", help="default: by generation, e.g. "
                 "tpu-ubuntu2204-base (v4), v2-alpha-tpuv5-lite (v5e)")
  p.add_argument("--slices", type=int, default=1, help="multi-slice: number of slices "
                 "(needs --queued)")
  p.add_argument("--queued", action="store_true", help="use a queued resource")
  p.add_argument("--spot", action="store_true", help="Spot TPUs (can be preempted)")
  p.add_argument("--preemptible", action="store_true", help="preemptible TPU VM (not queued)")
  p.add_argument("--workers", type=int, default=0, help="hosts per slice (default: from "
                 "--accelerator)")
  p.add_argument("--internal-ip", action="store_true", help="ssh/scp over internal IPs "
                 "(when launching from a VM in the same network)")
  p.add_argument("--remote-dir", default="ponder-jax", help="code directory, relative to the "
                 "home directory of every host")
  p.add_argument("--log-dir", default="", help="local logs and the code tarball (default "
                 "runs/tpu/<name>, relative to the repository)")
  p.add_argument("--code", choices=["tarball", "git"], default="tarball")
  p.add_argument("--ref", default="HEAD", help="git ref to pack or check out")
  p.add_argument("--repo-url", default="", help="with --code=git: the URL every host clones")
  p.add_argument("--python", default="python3.11", help="Python on the hosts (>= 3.11)")
  p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                 help="environment for the command on every host, e.g. "
                 "LIBTPU_INIT_ARGS=--xla_tpu_enable_async_collective_fusion=true (repeatable)")
  p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  return p


def make_pod(args: argparse.Namespace) -> Pod:
  """Validates the options; raises LaunchError naming the bad one."""
  if args.slices < 1:
    raise LaunchError(f"--slices={args.slices} must be >= 1")
  if args.slices > 1 and not args.queued:
    raise LaunchError(f"--slices={args.slices} needs --queued: queued resources create the "
                      "slices together and set MEGASCALE_* on every host")
  if args.preemptible and (args.queued or args.spot):
    raise LaunchError("--preemptible is for a plain TPU VM; with --queued (or instead) use "
                      "--spot")
  if args.code == "git" and not args.repo_url:
    raise LaunchError("--code=git needs --repo-url")
  workers_ = args.workers or hosts_per_slice(args.accelerator)
  runtime = args.runtime_version or RUNTIMES.get(args.accelerator.partition("-")[0], "")
  if not runtime:
    raise LaunchError(f"--accelerator={args.accelerator!r} has no default runtime; pass "
                      "--runtime-version")
  if not re.fullmatch(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*", args.remote_dir) or \
      args.remote_dir.startswith(("/", "-")):
    raise LaunchError(f"--remote-dir={args.remote_dir!r} must be a plain relative path "
                      "(letters, digits, . _ - /)")
  env = []
  for item in args.env:
    key, sep, value = item.partition("=")
    if not sep or not key.isidentifier():
      raise LaunchError(f"--env={item!r} must be KEY=VALUE")
    env.append((key, value))
  log_dir = (os.path.abspath(args.log_dir) if args.log_dir
             else os.path.join(ROOT, "runs", "tpu", args.name))
  if log_dir.startswith(ROOT + os.sep):
    # Local commands run from the repository root: paths inside it stay relative (stable output).
    log_dir = os.path.relpath(log_dir, ROOT)
  return Pod(name=args.name, zone=args.zone, project=args.project,
             accelerator=args.accelerator, runtime_version=runtime, slices=args.slices,
             queued=args.queued, spot=args.spot, preemptible=args.preemptible,
             workers=workers_, internal_ip=args.internal_ip, remote_dir=args.remote_dir,
             log_dir=log_dir, code=args.code, ref=args.ref, repo_url=args.repo_url,
             python=args.python, env=tuple(env))


def main(argv: Sequence[str] | None = None, out=sys.stdout) -> None:
  argv = list(sys.argv[1:] if argv is None else argv)
  command: list[str] = []
  if "--" in argv:
    i = argv.index("--")
    argv, command = argv[:i], argv[i + 1:]
  parser = _parser()
  args = parser.parse_args(argv)
  try:
    pod = make_pod(args)
    runner = Runner(pod, args.dry_run, out)
    if args.action in ("create", "launch"):
      runner.create()
    if args.action in ("setup", "launch"):
      runner.setup()
    if args.action in ("run", "launch"):
      runner.run(command)
    if args.action == "describe":
      runner.one(f"describe {pod.name}", pod.describe()[0])
    if args.action == "stop":
      runner.stop()
    if args.action == "delete":
      runner.one(f"delete {pod.name}", pod.delete()[0])
  except LaunchError as e:
    parser.error(str(e))


if __name__ == "__main__":
  main()
