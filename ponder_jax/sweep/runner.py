"""Planning, checking and running a sweep's runs.

`plan` turns stages (dsl.py) into `Run`s: one workdir and one command line each. A one-stage
sweep puts its runs in `DIR/<run name>`; a study puts them in `DIR/<stage>/<run name>`, where a
run of a stage with `after=` is named `<parent run>+<own name>`. `check` builds every run's
config from its exact command line and validates it before anything starts. `execute` runs the
stages in order, each run as a subprocess (N at a time), its output in `<run>/train.log`; a run
that finished before with the same command line and the same config (`<run>/sweep_done.json`) is
not run again, and a run whose parent failed is skipped.

Not here: the sweep language (dsl.py), tables and plots (summary.py).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import os
import posixpath
import shlex
import subprocess
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from ponder_jax.sweep.dsl import ARM, Override, Stage, SweepError, as_stages, flag_value, \
    load_config, run_names

# What each program is on a command line (emit) and as a subprocess of this interpreter.
CONSOLE = {"train": "ponder-train", "bolt": "ponder-bolt"}
MODULES = {"train": "ponder_jax.cli", "bolt": "ponder_jax.bolt.em"}
DONE = "sweep_done.json"
NOT_CHOSEN = "not run: its parent's LR is not its arm's best"  # from_best; not a failure


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  overrides: Override  # what the run name says (with its parent's, for a later stage)
  workdir: str
  args: tuple[str, ...]  # the program's arguments (config, workdir, every override)
  config_overrides: Override = dataclasses.field(default_factory=dict)  # on its command line
  stage: str = ""
  program: str = "train"
  parent: str | None = None  # the name of the run this one starts from
  from_best: tuple[str, bool] | None = None  # (metric, higher is better): see dsl.Stage

  def command(self, program: Sequence[str] | None = None) -> list[str]:
    return [*(program or (CONSOLE[self.program],)), *self.args]


def _join(*parts: str) -> str:
  return posixpath.join(*parts) if "://" in parts[0] else os.path.join(*parts)


def plan(config: str, workdir: str, stages: Sequence[Stage] | Sequence[Mapping[str, Any]],
         base: Mapping[str, Any] | None = None) -> list[Run]:
  """The runs of every stage in order; `base` overrides (from --config.x=v) apply to all."""
  base = dict(base or {})
  stages = as_stages(stages)
  by_stage: dict[str, list[Run]] = {}
  out: list[Run] = []
  for item in stages:
    parents = by_stage[item.after] if item.after else [None]
    own_names = run_names(item.runs)
    runs = []
    for parent in parents:
      for own_name, own in zip(own_names, item.runs):
        name = f"{parent.name}+{own_name}" if parent else own_name
        overrides, config_overrides = dict(own), {k: v for k, v in own.items() if k != ARM}
        if parent:
          for key in item.inherit:
            if key not in parent.overrides:
              raise SweepError(f"stage '{item.name}' inherits '{key}', which run "
                               f"'{parent.name}' does not set")
            config_overrides.setdefault(key, parent.overrides[key])
          config_overrides[item.link] = parent.workdir
          inherited = {k: v for k, v in parent.overrides.items() if k not in own}
          overrides = {**inherited, **own}
          if ARM in parent.overrides and ARM in own:
            overrides[ARM] = f"{parent.overrides[ARM]}+{own[ARM]}"
        both = sorted(set(base) & set(config_overrides))
        if both:
          raise SweepError(f"config key '{both[0]}' is set both on the command line and by the "
                           f"sweep (run {name}); drop one of them")
        run_dir = _join(workdir, item.name, name) if item.name else _join(workdir, name)
        args = [f"--config={item.config or config}", f"--workdir={run_dir}"]
        args += [f"--config.{k}={flag_value(v)}" for k, v in {**base, **config_overrides}.items()]
        runs.append(Run(name, overrides, run_dir, tuple(args), {**base, **config_overrides},
                        item.name, item.program, parent.name if parent else None,
                        (item.from_best, item.higher_is_better) if item.from_best else None))
    by_stage[item.name] = runs
    out += runs
  return out


def _all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  keys = []
  for key, value in config.items():
    path = f"{prefix}{key}"
    keys.append(path)
    if isinstance(value, ml_collections.ConfigDict):
      keys += _all_keys(value, path + ".")
  return keys


def _check_key(config: ml_collections.ConfigDict, key: str, value: Any, where: str) -> None:
  """Assigns `value` at `key` of (a fresh copy of) the config the way ml-collections does."""
  node, parts = config, key.split(".")
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      known = _all_keys(config)
      close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
      hint = f"; did you mean {', '.join(close)}?" if close else ""
      raise SweepError(f"{where}: unknown config key '{key}' "
                       f"('{'.'.join(parts[:i + 1])}' does not exist){hint}")
    if i < len(parts) - 1:
      node = node[part]
  try:
    setattr(node, parts[-1], value)
  except (TypeError, ValueError) as e:
    raise SweepError(f"{where}: config key '{key}' cannot take {value!r}: {e}") from e


def parse(args: Sequence[str]) -> ml_collections.ConfigDict:
  """The config the program given `args` builds (the same flag definition as its CLI)."""
  argv = ["ponder-train", *args]
  values_ = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values_, lock_config=True,
                                  sys_argv=argv)
  flags.DEFINE_string("workdir", None, "", flag_values=values_)
  values_(argv)
  return values_.config


def check(run_plan: Sequence[Run]) -> None:
  """Checks every run before any starts; raises SweepError naming the run and the key."""
  # pylint: disable=import-outside-toplevel
  from ponder_jax.bolt.em import BoltConfig
  from ponder_jax.experiment import Experiment
  from ponder_jax.validation import ConfigError
  references: dict[str, ml_collections.ConfigDict] = {}
  for run in run_plan:
    where = f"run '{run.name}'"
    run_config = run.args[0].removeprefix("--config=")
    if run_config not in references:
      references[run_config] = load_config(run_config)
    reference = copy.deepcopy(references[run_config])
    for key, value in run.config_overrides.items():
      _check_key(reference, key, value, where)
    try:
      parsed = parse(run.args)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
      raise SweepError(f"{where}: its command line does not parse: {e}") from e
    for key, value in run.config_overrides.items():
      got = parsed
      for part in key.split("."):
        got = got[part]
      if got != value:  # e.g. a string the command line would read as something else
        raise SweepError(f"{where}: config key '{key}' = {value!r} reads back as {got!r} from "
                         f"--config.{key}={flag_value(value)}")
    try:
      Experiment.from_config(parsed)
      if run.program == "bolt":
        BoltConfig.from_config(parsed.get("bolt", {}))
    except ConfigError as e:
      raise SweepError(f"{where}: {e}") from e


# Running ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Result:
  run: Run
  returncode: int | None = None
  seconds: float = 0.0
  skipped: str = ""  # why the run did not start

  @property
  def failed(self) -> bool:
    """Failed, or could not start because the run it starts from failed."""
    return self.status not in ("ok", "not run", NOT_CHOSEN)

  @property
  def status(self) -> str:
    if self.skipped:
      return self.skipped
    return {None: "not run", 0: "ok"}.get(self.returncode, f"failed ({self.returncode})")


def _fingerprint(run: Run) -> str:
  """What the run's program is given: its command line and the config it builds from it (a
  config file edited since counts as a different run)."""
  try:
    config = parse(run.args).to_json_best_effort(sort_keys=True)
  except Exception:  # pylint: disable=broad-except
    config = ""  # a command line that is not a config (tests' fake programs)
  return hashlib.sha1(json.dumps([list(run.args), config]).encode()).hexdigest()


def done(run: Run, same_config: bool = True) -> dict[str, Any] | None:
  """The record of an earlier successful execution of the run with this command line, if any;
  with `same_config`, only if its config also built the same (the test for running it again;
  a report of what finished reads the runs whatever defaults changed since)."""
  path = os.path.join(run.workdir, DONE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    record = json.load(f)
  if record.get("args") != list(run.args):
    return None
  return record if not same_config or record.get("fingerprint") == _fingerprint(run) else None


# best(parent results, metric, higher_is_better) -> the names of the runs at their arm's best LR
BestRuns = Callable[[Sequence["Result"], str, bool], set[str]]


def execute(run_plan: Sequence[Run], parallel: int = 1,
            program: Sequence[str] | None = None,
            env: Mapping[str, str] | None = None, best: BestRuns | None = None) -> list[Result]:
  """Runs every run as a subprocess, at most `parallel` at a time, stage after stage; output to
  <run>/train.log. A failing run does not stop the others (only the runs that start from it).
  `program` replaces every run's program (tests); by default `python -m <its module>`. `best`
  picks the parents of a stage with `from_best` (summary.best_runs).
  """
  if parallel < 1:
    raise SweepError(f"--parallel={parallel} must be >= 1")
  results = [Result(run) for run in run_plan]
  stages = list(dict.fromkeys(run.stage for run in run_plan))
  for stage_name in stages:
    indices = [i for i, run in enumerate(run_plan) if run.stage == stage_name]
    failed_before = {r.run.name for r in results if r.returncode not in (None, 0) or r.skipped}
    mark_not_chosen(results, stage_name, best)
    pending = []
    for i in indices:
      run = run_plan[i]
      if run.parent is not None and run.parent in failed_before:
        results[i].skipped = "skipped (its parent failed)"
      elif results[i].skipped:
        continue
      elif (record := done(run)) is not None:
        results[i].returncode, results[i].seconds = 0, record.get("seconds", 0.0)
        print(f"[{i + 1}/{len(run_plan)}] done before: {run.name}", flush=True)
      else:
        pending.append(i)
    _execute(run_plan, results, pending, parallel, program, env)
  return results


def mark_not_chosen(results: Sequence[Result], stage: str, best: BestRuns | None) -> None:
  """Marks the runs of a `from_best` stage that never start: those whose parent finished but is
  not at its arm's best LR (`best` picks, e.g. summary.best_runs)."""
  stage_results = [r for r in results if r.run.stage == stage]
  rule = stage_results[0].run.from_best if stage_results else None
  if rule is None:
    return
  if best is None:
    raise SweepError(f"stage '{stage}' starts from the best parents: execute() needs "
                     "best=summary.best_runs")
  parents = {r.run.parent for r in stage_results}
  finished = [r for r in results if r.run.name in parents and r.status == "ok"]
  chosen = best(finished, *rule)
  finished_names = {r.run.name for r in finished}
  for result in stage_results:
    if (result.returncode is None and result.run.parent in finished_names
        and result.run.parent not in chosen):
      result.skipped = NOT_CHOSEN


def _execute(run_plan: Sequence[Run], results: list[Result], pending: list[int], parallel: int,
             program: Sequence[str] | None, env: Mapping[str, str] | None) -> None:
  active: dict[int, tuple[subprocess.Popen, Any, float]] = {}
  try:
    while pending or active:
      while pending and len(active) < parallel:
        i = pending.pop(0)
        run = run_plan[i]
        os.makedirs(run.workdir, exist_ok=True)
        log = open(os.path.join(run.workdir, "train.log"), "ab")  # pylint: disable=consider-using-with
        command = run.command(program or (sys.executable, "-m", MODULES[run.program]))
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(env) if env is not None else None)
        active[i] = (proc, log, time.monotonic())
        print(f"[{i + 1}/{len(run_plan)}] started {run.name}", flush=True)
      for i, (proc, log, started) in list(active.items()):
        if proc.poll() is None:
          continue
        log.close()
        result = results[i]
        result.returncode, result.seconds = proc.returncode, time.monotonic() - started
        del active[i]
        if result.returncode == 0:
          with open(os.path.join(result.run.workdir, DONE), "w", encoding="utf-8") as f:
            json.dump({"args": list(result.run.args), "fingerprint": _fingerprint(result.run),
                       "seconds": result.seconds}, f)
        print(f"[{i + 1}/{len(run_plan)}] {result.status}: {run_plan[i].name} "
              f"({result.seconds:.0f} s; log {run_plan[i].workdir}/train.log)", flush=True)
      time.sleep(0.2)
  finally:
    for proc, _, _ in active.values():  # interrupted: let every run checkpoint and exit
      proc.terminate()
    for proc, log, _ in active.values():
      proc.wait()
      log.close()


def emit(run_plan: Sequence[Run], target: str, launcher_flags: str = "") -> list[str]:
  """Shell lines that launch every run through launch/<target>.py (a pod runs one at a time)."""
  if target not in ("tpu", "local"):
    raise SweepError(f"--emit={target!r} must be 'tpu' or 'local'")
  prefix = ["python", f"launch/{target}.py"] + (["run"] if target == "tpu" else [])
  prefix += shlex.split(launcher_flags)
  return [shlex.join([*prefix, "--", *run.command()]) for run in run_plan]
