"""Tests for ponder_jax/sweep/: the combinators, run names, the pre-flight checks (unknown keys,
ml-collections type rules, config validation), a real sweep of four tiny training runs, and
studies (stages, arms, per-arm reports, resuming)."""

import csv
import json
import os
import shlex
import subprocess
import sys
import textwrap
import time

import pytest

from ponder_jax import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny byte-vocabulary model: a few seconds per run on the CPU.
TINY = os.path.join(ROOT, "tests", "configs", "tiny.py")
TINY_CONFIG = textwrap.dedent("""\
    from ponder_jax import sweep

    def get_config():
      return sweep.load_config({tiny!r})

    def get_sweep():
      return {sweep}
    """)


def _config_file(tmp_path, sweep_expr: str) -> str:
  path = tmp_path / "tiny_sweep.py"
  path.write_text(TINY_CONFIG.format(tiny=TINY, sweep=sweep_expr))
  return str(path)


def _run_sweep(args, timeout=300):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", JAX_DEFAULT_PRNG_IMPL="rbg")  # rbg: as conftest, faster
  return subprocess.run([sys.executable, "-m", "ponder_jax.sweep", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout, check=False)


# Combinators and names ----------------------------------------------------------------------
def test_product_zipped_chain():
  steps = sweep.values("ponder.steps", [0, 1, 3])
  pause = sweep.values("data.pause.ratio", [0.0, 0.1])
  grid = sweep.product(steps, pause)
  assert len(grid) == 6
  assert grid[0] == {"ponder.steps": 0, "data.pause.ratio": 0.0}
  assert grid[1] == {"ponder.steps": 0, "data.pause.ratio": 0.1}  # the last varies fastest
  paired = sweep.zipped(sweep.values("optim.lr", [1e-3, 3e-4]),
                        sweep.values("train.seed", [1, 2]))
  assert paired == [{"optim.lr": 1e-3, "train.seed": 1}, {"optim.lr": 3e-4, "train.seed": 2}]
  assert sweep.chain(steps, {"ponder.steps": 7}) == steps + [{"ponder.steps": 7}]
  assert sweep.product() == [{}]


def test_combinator_errors():
  with pytest.raises(sweep.SweepError, match="'ponder.steps' is set by two combined sweeps"):
    sweep.product(sweep.values("ponder.steps", [0]), sweep.values("ponder.steps", [1]))
  with pytest.raises(sweep.SweepError, match=r"equal length, got lengths \[2, 1\]"):
    sweep.zipped(sweep.values("a", [1, 2]), sweep.values("b", [1]))
  with pytest.raises(sweep.SweepError, match="at least one value"):
    sweep.values("a", [])


def test_run_names_are_stable_and_filesystem_safe():
  runs = sweep.product(sweep.values("ponder.steps", [0, 3]),
                       sweep.values("data.pause.ratio", [0.0, 0.1]))
  names = sweep.run_names(runs)
  assert names[:2] == ["ratio=0.0_steps=0", "ratio=0.1_steps=0"]
  assert sweep.run_names(list(reversed(runs))) == list(reversed(names))  # from overrides alone
  assert sweep.run_names([{"a.b": 1, "c.d": 2}]) == sweep.run_names([{"c.d": 2, "a.b": 1}])
  # Keys sharing a leaf keep enough of their path to stay apart.
  assert sweep.run_names([{"data.pause.ratio": 0.1, "x.ratio": 2}]) == [
      "pause.ratio=0.1_x.ratio=2"]
  nasty = sweep.run_names([{"data.vocab": "hf:/models/gpt2 'x';$(rm)"}, {}])
  assert nasty[1] == "base"
  assert all(ch.isalnum() or ch in "._=+-~" for ch in nasty[0])
  # Different values that slug alike get a digest; identical overrides are an error.
  twins = sweep.run_names([{"data.vocab": "a/b"}, {"data.vocab": "a-b"}])
  assert twins[0] != twins[1]
  with pytest.raises(sweep.SweepError, match="same overrides twice"):
    sweep.run_names([{"a": 1}, {"a": 1}])
  long = sweep.run_names([{"a": "x" * 300}])[0]
  assert len(long) <= 120 and "~" in long


def test_plan_builds_the_train_command_and_refuses_double_keys(tmp_path):
  run, = sweep.plan("configs/demo.py", str(tmp_path), [{"ponder.steps": 3, "model.dtype":
                                                        "bfloat16"}], {"train.steps": 10})
  assert run.name == "dtype=bfloat16_steps=3"
  assert run.command() == ["ponder-train", "--config=configs/demo.py",
                           f"--workdir={tmp_path}/dtype=bfloat16_steps=3",
                           "--config.train.steps=10", "--config.ponder.steps=3",
                           "--config.model.dtype=bfloat16"]
  gcs, = sweep.plan("c.py", "gs://bucket/sweep", [{"a": True}])
  assert gcs.workdir == "gs://bucket/sweep/a=true"
  with pytest.raises(sweep.SweepError, match="'train.steps' is set both"):
    sweep.plan("c.py", "w", [{"train.steps": 5}], {"train.steps": 10})


# Pre-flight checks ----------------------------------------------------------------------------
@pytest.mark.parametrize("overrides,message", [
    ({"ponder.stepz": 1}, "unknown config key 'ponder.stepz' ('ponder.stepz' does not exist); "
                          "did you mean ponder.steps"),
    ({"nosuch.section.key": 1}, "unknown config key 'nosuch.section.key' ('nosuch' does not"),
    ({"ponder.steps.deeper": 1}, "unknown config key 'ponder.steps.deeper'"),
    ({"ponder.steps": 0.5}, "config key 'ponder.steps' cannot take 0.5"),
    ({"data.pause.in_eval": "yes"}, "config key 'data.pause.in_eval' cannot take 'yes'"),
    ({"ponder.steps": -1}, "config key 'ponder.steps' = -1"),  # Experiment validation
])
def test_check_rejects_bad_overrides_naming_run_and_key(tmp_path, overrides, message):
  config = _config_file(tmp_path, "[]")
  run_plan = sweep.plan(config, str(tmp_path / "w"), [{"train.seed": 1}, overrides])
  with pytest.raises(sweep.SweepError) as e:
    sweep.check(run_plan)
  assert message in str(e.value)
  assert f"run '{run_plan[1].name}'" in str(e.value)


def test_check_accepts_valid_runs_with_int_for_float(tmp_path):
  config = _config_file(tmp_path, "[]")
  runs = [{"data.pause.ratio": 0, "ponder.steps": 1}, {"optim.lr": 3e-3, "model.dtype":
                                                      "bfloat16"}]
  sweep.check(sweep.plan(config, str(tmp_path / "w"), runs, {"train.steps": 2}))


def test_load_sweep_errors(tmp_path):
  no_sweep = tmp_path / "plain.py"
  no_sweep.write_text("def get_config():\n  return None\n")
  with pytest.raises(sweep.SweepError, match="defines no get_sweep"):
    sweep.load_sweep(str(no_sweep))
  with pytest.raises(sweep.SweepError, match="values must be bool, int, float, str"):
    sweep.load_sweep(_config_file(tmp_path, "[{'a.b': [1, 2]}]"))
  with pytest.raises(sweep.SweepError, match="does not exist"):
    sweep.load_sweep(str(tmp_path / "missing.py"))


def test_emit_prints_launcher_lines():
  run_plan = sweep.plan("configs/demo.py", "gs://b/s", [{"ponder.steps": s} for s in (0, 1)])
  lines = sweep.emit(run_plan, "tpu", "--name=pod --zone=us-central2-b --accelerator=v4-32")
  assert len(lines) == 2
  argv = shlex.split(lines[1])
  assert argv[:7] == ["python", "launch/tpu.py", "run", "--name=pod", "--zone=us-central2-b",
                      "--accelerator=v4-32", "--"]
  assert argv[7:] == ["ponder-train", "--config=configs/demo.py", "--workdir=gs://b/s/steps=1",
                      "--config.ponder.steps=1"]
  assert shlex.split(sweep.emit(run_plan, "local")[0])[:3] == ["python", "launch/local.py", "--"]


# The console script ---------------------------------------------------------------------------
def test_unknown_key_fails_before_any_run_starts(tmp_path):
  config = _config_file(tmp_path, "sweep.product(sweep.values('ponder.steps', [0, 1]), "
                        "sweep.values('ponder.nonexistent', [1]))")
  workdir = tmp_path / "sweep"
  result = _run_sweep([f"--config={config}", f"--workdir={workdir}"])
  assert result.returncode == 2, result.stderr
  assert "unknown config key 'ponder.nonexistent'" in result.stderr
  assert not workdir.exists()  # nothing was started, not even the sweep directory


def test_sweep_of_four_tiny_runs_summarises_all(tmp_path):
  # Seeds do not change the compiled program: runs 2-4 reuse run 1's compilations from the
  # sweep's shared cache (one run at a time, so that the first one fills it).
  config = _config_file(tmp_path, "sweep.product(sweep.values('train.seed', [0, 1]), "
                        "sweep.values('data.seed', [0, 1]))")
  workdir = tmp_path / "sweep"
  result = _run_sweep([f"--config={config}", f"--workdir={workdir}"])
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  names = ["data.seed=0_train.seed=0", "data.seed=1_train.seed=0", "data.seed=0_train.seed=1",
           "data.seed=1_train.seed=1"]
  with open(workdir / "summary.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert [r["run"] for r in rows] == names
  for row in rows:
    assert row["status"] == "ok"
    assert row["step"] == "3"
    assert 0 < float(row["train_loss"]) < 10
    assert 0 < float(row["eval/shakespeare/loss"]) < 10
  summary = json.loads((workdir / "summary.json").read_text())
  assert [(r["train.seed"], r["data.seed"]) for r in summary] == [(0, 0), (0, 1), (1, 0), (1, 1)]
  assert (workdir / "summary.png").stat().st_size > 0
  # The runs shared a compilation cache: <workdir>/jax_cache, unless one is exported (the
  # test session exports its own, see conftest.py).
  assert os.listdir(os.environ.get("JAX_COMPILATION_CACHE_DIR") or workdir / "jax_cache")
  for name in names:
    assert name in result.stdout  # the table
    assert (workdir / name / "metrics.jsonl").exists()
  # Other seeds, other initialisation and data: the runs really differ.
  assert len({row["eval/shakespeare/loss"] for row in rows}) == 4


def test_execute_runs_n_at_a_time_and_reports_failures(tmp_path):
  """`parallel` runs overlap; a failing run is reported without stopping the others."""
  script = ("import sys, time; time.sleep(1.5); "
            "sys.exit(3 if any('fail' in a for a in sys.argv) else 0)")
  runs = sweep.plan("unused.py", str(tmp_path), [{"k": v} for v in ("a", "b", "fail", "c")])
  start = time.monotonic()
  results = sweep.execute(runs, parallel=4, program=(sys.executable, "-c", script))
  elapsed = time.monotonic() - start
  assert [r.status for r in results] == ["ok", "ok", "failed (3)", "ok"]
  assert elapsed < 4 * 1.5  # overlapped, not one after the other
  assert all((tmp_path / r.run.name / "train.log").exists() for r in results)
  rows = sweep.summarize(results)
  assert [row["status"] for row in rows] == ["ok", "ok", "failed (3)", "ok"]
  assert rows[0]["train_loss"] is None and "failed (3)" in sweep.format_table(rows)


@pytest.mark.parametrize("name,count", [("ponder_steps", 3), ("pause", 2), ("warmup", 2),
                                        ("thoughts", 2), ("ablations", 24)])
def test_shipped_ablation_sweeps_pass_the_preflight_check(name, count, tmp_path):
  config = os.path.join(ROOT, "configs", "sweeps", f"{name}.py")
  runs = sweep.load_sweep(config)
  assert len(runs) == count
  sweep.check(sweep.plan(config, str(tmp_path), runs))


# Studies: stages, arms, reports -------------------------------------------------------------
def _stages():
  return [sweep.stage("pre", sweep.product(sweep.arms(a={}, b={"x.y": 1}),
                                           sweep.values("train.seed", [0, 1]))),
          sweep.stage("ft", sweep.arms(s={}, p={"m": 10}), config="ft.py:t", after="pre",
                      inherit=("train.seed",)),
          sweep.stage("solo", {"k": "v"}, program="bolt")]


def test_arm_names_say_the_arm_and_only_what_varies_within_it():
  runs = sweep.product(sweep.arms(vanilla={}, ponder={"ponder.steps": 3}),
                       sweep.values("optim.lr", [1e-3, 3e-3]))
  assert sweep.run_names(runs) == ["vanilla_lr=0.001", "vanilla_lr=0.003", "ponder_lr=0.001",
                                   "ponder_lr=0.003"]
  assert runs[2] == {"arm": "ponder", "ponder.steps": 3, "optim.lr": 1e-3}
  with pytest.raises(sweep.SweepError, match="sets 'arm' itself"):
    sweep.arms(a={"arm": "b"})


def test_stages_chain_runs_to_their_parents(tmp_path):
  plan = sweep.plan("study.py", str(tmp_path), _stages(), {"train.steps": 2})
  names = [(r.stage, r.name) for r in plan]
  assert names == [("pre", "a_seed=0"), ("pre", "a_seed=1"), ("pre", "b_seed=0"),
                   ("pre", "b_seed=1"), ("ft", "a_seed=0+s"), ("ft", "a_seed=0+p"),
                   ("ft", "a_seed=1+s"), ("ft", "a_seed=1+p"), ("ft", "b_seed=0+s"),
                   ("ft", "b_seed=0+p"), ("ft", "b_seed=1+s"), ("ft", "b_seed=1+p"),
                   ("solo", "k=v")]
  child = plan[11]  # b_seed=1+p
  assert child.parent == "b_seed=1" and child.workdir == str(tmp_path / "ft" / "b_seed=1+p")
  assert child.args[0] == "--config=ft.py:t"
  # The parent's workdir, the inherited seed, the base and its own keys; not the parent's x.y.
  assert child.config_overrides == {"train.steps": 2, "m": 10, "train.seed": 1,
                                    "init.from_checkpoint": str(tmp_path / "pre" / "b_seed=1")}
  # Its row says its whole lineage: both arms, and the parent's keys.
  assert child.overrides == {"arm": "b+p", "x.y": 1, "train.seed": 1, "m": 10}
  assert plan[-1].program == "bolt" and plan[-1].command()[0] == "ponder-bolt"


def test_study_definitions_are_checked():
  with pytest.raises(sweep.SweepError, match="runs after 'later'"):
    sweep.as_stages([sweep.stage("a", {}, after="later"), sweep.stage("later", {})])
  with pytest.raises(sweep.SweepError, match="two stages are named 'a'"):
    sweep.as_stages([sweep.stage("a", {}), sweep.stage("a", {})])
  with pytest.raises(sweep.SweepError, match="mixes stages and plain overrides"):
    sweep.as_stages([sweep.stage("a", {}), {"k": 1}])
  with pytest.raises(sweep.SweepError, match="program='python'"):
    sweep.stage("a", {}, program="python")
  with pytest.raises(sweep.SweepError, match="inherits 'train.seed'"):
    sweep.plan("c.py", "w", [sweep.stage("a", {}), sweep.stage("b", {}, after="a",
                                                                inherit=("train.seed",))])
  with pytest.raises(sweep.SweepError, match="unknown tier 'huge': use one of smoke, claim"):
    sweep.tier("huge", {"smoke": {}, "claim": {}})
  with pytest.raises(sweep.SweepError, match="unknown part 'x'"):
    sweep.tier("smoke,x", {"smoke": {}}, parts=("finetune",))
  assert sweep.tier("smoke,finetune", {"smoke": 1}, parts=("finetune",)) == ("smoke", 1,
                                                                              "finetune")


def test_execute_skips_finished_runs_and_the_children_of_failed_ones(tmp_path):
  """A stage starts after the one before; a run that finished with the same command line is not
  run again; a run whose parent failed is skipped, not started."""
  script = ("import sys; open(sys.argv[2].split('=', 1)[1] + '/ran', 'a').write('x'); "
            "sys.exit(3 if any('fail' in a for a in sys.argv) else 0)")
  stages = [sweep.stage("pre", sweep.values("k", ["ok", "fail"])),
            sweep.stage("ft", {"m": 1}, after="pre")]
  plan = sweep.plan("unused.py", str(tmp_path), stages)
  program = (sys.executable, "-c", script)
  results = sweep.execute(plan, program=program)
  assert [r.status for r in results] == ["ok", "failed (3)", "ok",
                                         "skipped (its parent failed)"]
  assert not (tmp_path / "ft" / "k=fail+m=1").exists()
  again = sweep.execute(plan, program=program)
  assert [r.status for r in again] == ["ok", "failed (3)", "ok", "skipped (its parent failed)"]
  # Finished runs did not run again; the failed one did.
  assert (tmp_path / "pre" / "k=ok" / "ran").read_text() == "x"
  assert (tmp_path / "pre" / "k=fail" / "ran").read_text() == "xx"
  # A changed command line runs again.
  changed = sweep.plan("unused.py", str(tmp_path), stages, {"extra": 1})
  sweep.execute(changed[:1], program=program)
  assert (tmp_path / "pre" / "k=ok" / "ran").read_text() == "xx"


def _row(arm, lr, seed, loss, status="ok"):
  return {"run": f"{arm}{lr}{seed}", "status": status, "arm": arm, "optim.lr": lr,
          "train.seed": seed, "loss": loss, "acc": -loss}


def test_report_keeps_each_arms_best_lr_by_its_mean_over_seeds(tmp_path):
  rows = [_row("a", 1e-3, 0, 3.0), _row("a", 1e-3, 1, 3.4),   # mean 3.2
          _row("a", 3e-3, 0, 2.9), _row("a", 3e-3, 1, 3.7),   # mean 3.3: one good seed only
          _row("b", 1e-3, 0, 2.0), _row("b", 1e-3, 1, 9.0, status="failed (1)"),
          _row("b", 3e-3, 0, 2.5), _row("b", 3e-3, 1, 2.7)]   # mean 2.6 vs 2.0 (one seed)
  report = sweep.Report(metrics=("loss", "acc"), select="loss")
  arms = sweep.aggregate(rows, report)
  assert [(a["arm"], a["lr"], a["seeds"]) for a in arms] == [("a", 1e-3, 2), ("b", 1e-3, 1)]
  assert arms[0]["loss"] == pytest.approx(3.2) and arms[0]["loss std"] == pytest.approx(
      0.2828, abs=1e-4)
  assert arms[1]["failed"] == 1 and arms[1]["lrs"] == {1e-3: 2.0, 3e-3: 2.6}
  # Higher is better: the same rows pick by the largest mean.
  best = sweep.aggregate(rows, sweep.Report(metrics=("acc",), select="acc",
                                            higher_is_better=True))
  assert [a["lr"] for a in best] == [1e-3, 1e-3]
  # Derived columns, and the files.
  derived = sweep.Report(metrics=("twice",), select="twice", name="mine",
                         derive=lambda row: {"twice": 2 * row["loss"]})
  markdown = sweep.write_report(str(tmp_path), rows, derived)
  assert "| a | 0.001 | 2 | 6.4 ± 0.57 |" in markdown
  assert (tmp_path / "mine.md").read_text() == markdown
  assert json.loads((tmp_path / "mine.json").read_text())[0]["twice"] == pytest.approx(6.4)
  assert (tmp_path / "mine.png").stat().st_size > 0
  with pytest.raises(ValueError, match="select='nope' must be one of"):
    sweep.Report(metrics=("loss",), select="nope")


def test_a_finished_run_runs_again_when_its_config_file_changed(tmp_path):
  config = _config_file(tmp_path, "[{'train.seed': 1}]")
  plan = sweep.plan(config, str(tmp_path / "w"), sweep.load_sweep(config))
  script = "import sys; open(sys.argv[2].split('=', 1)[1] + '/ran', 'a').write('x')"
  program = (sys.executable, "-c", script)
  sweep.execute(plan, program=program)
  sweep.execute(plan, program=program)
  ran = tmp_path / "w" / "seed=1" / "ran"
  assert ran.read_text() == "x"
  with open(config, "a", encoding="utf-8") as f:  # the same command line, another config
    f.write("\n_get = get_config\ndef get_config():\n  c = _get()\n  c.train.steps = 7\n"
            "  return c\n")
  sweep.execute(plan, program=program)
  assert ran.read_text() == "xx"


def test_a_stage_can_start_only_from_each_arms_best_lr(tmp_path):
  """from_best: the children of the runs not at their arm's best LR (mean over seeds) are
  skipped; the metric is read from each parent's metrics.jsonl."""
  # Each fake run writes its final eval loss: arm a is best at LR 2, arm b at LR 1.
  script = ("import json, sys; args = dict(a.split('=', 1) for a in sys.argv[1:]); "
            "d = args['--workdir']; lr = float(args.get('--config.optim.lr', 1)); "
            "arm = 'a' if '/a_' in d else 'b'; "
            "loss = {('a', 1): 3.0, ('a', 2): 2.0, ('b', 1): 1.0, ('b', 2): 4.0}; "
            "open(d + '/metrics.jsonl', 'w').write(json.dumps("
            "{'step': 1, 'eval/x/loss': loss[(arm, int(lr))]}))")
  stages = [sweep.stage("pre", sweep.product(sweep.arms(a={}, b={"k": 1}),
                                             sweep.values("optim.lr", [1, 2]))),
            sweep.stage("ft", {"m": 1}, after="pre", from_best="eval/x/loss")]
  plan = sweep.plan("unused.py", str(tmp_path), stages)
  results = sweep.execute(plan, program=(sys.executable, "-c", script), best=sweep.best_runs)
  status = {r.run.name: r.status for r in results if r.run.stage == "ft"}
  not_chosen = "not run: its parent's LR is not its arm's best"
  assert status == {"a_lr=1+m=1": not_chosen, "a_lr=2+m=1": "ok", "b_lr=1+m=1": "ok",
                    "b_lr=2+m=1": not_chosen}
  assert not any(r.failed for r in results)
  # The report leaves the runs that were never meant to run out (no 'failed' count, no LR row).
  rows = sweep.summarize(results)
  arms = sweep.aggregate(rows, sweep.Report(metrics=("eval/x/loss",), select="eval/x/loss"))
  assert [(a["arm"], a["lr"], a["failed"]) for a in arms] == [("a", 2.0, 0), ("b", 1.0, 0)]
  with pytest.raises(sweep.SweepError, match="needs after="):
    sweep.stage("x", {}, from_best="eval/x/loss")
