"""Sweeps: many `ponder-train` runs of one config, each with its own overrides.

A config file may define `get_sweep()` next to `get_config()`, returning a list of overrides
(mappings of dotted config keys to values) built with three combinators:

    from ponder_jax import sweep
    def get_sweep():
      return sweep.product(sweep.values("ponder.steps", [0, 1, 3]),
                           sweep.values("data.pause.ratio", [0.0, 0.1]))   # 6 runs

  values(key, [a, b])      [{key: a}, {key: b}]
  product(s1, s2, ...)     every combination (keys must differ)
  zipped(s1, s2, ...)      the i-th of each, merged (equal lengths)
  chain(s1, s2, ...)       one after the other

`ponder-sweep --config=configs/sweeps/X.py --workdir=DIR [--parallel=N] [--emit=tpu|local]
[--dry-run] [--config.a.b=v ...]` checks every run's overrides against the config before any
run starts (an unknown key fails with its name and close matches; each value is assigned to the
config the way ml-collections assigns it, then parsed from the exact command line the run gets,
then the whole config is validated), then runs each as a `ponder-train` subprocess in
`DIR/<run name>` (sequentially, or N at a time; each writes `train.log` there), or prints the
commands for a pod or a local launcher. Run names come from the overrides alone
(`steps=3_ratio=0.1`), so re-running a sweep resumes every run from its checkpoints. At the end
`DIR/summary.{csv,json,png}` and a table on stdout collect each run's final train loss and eval
losses from its metrics.jsonl. The runs share a JAX compilation cache (`DIR/jax_cache`), so runs
that differ only in values the program does not bake in (seeds, data) compile once.

Not here: the training itself (cli.py / trainer.py) and the launchers (launch/).
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import hashlib
import importlib.machinery
import importlib.util
import inspect
import json
import os
import posixpath
import re
import shlex
import subprocess
import sys
import time
from typing import Any, Iterable, Mapping, Sequence

import ml_collections
from absl import app, flags
from ml_collections import config_flags

Override = dict[str, Any]
_SCALARS = (bool, int, float, str)
_MAX_NAME = 120


class SweepError(ValueError):
  """A sweep definition or one of its runs is invalid; nothing has been started."""


# The combinators ----------------------------------------------------------------------------
def _as_sweep(s: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Override]:
  if isinstance(s, Mapping):
    return [dict(s)]
  out = []
  for item in s:
    if not isinstance(item, Mapping):
      raise SweepError(f"a sweep is a list of {{dotted key: value}} mappings, got {item!r}")
    out.append(dict(item))
  return out


def _merge(parts: Sequence[Override]) -> Override:
  merged: Override = {}
  for part in parts:
    for key, value in part.items():
      if key in merged:
        raise SweepError(f"config key '{key}' is set by two combined sweeps "
                         f"({merged[key]!r} and {value!r}); each key may be swept once")
      merged[key] = value
  return merged


def values(key: str, options: Iterable[Any]) -> list[Override]:
  """One run per value of `key`."""
  options = list(options)
  if not options:
    raise SweepError(f"values('{key}', ...) needs at least one value")
  return [{key: v} for v in options]


def product(*sweeps) -> list[Override]:
  """Every combination of one entry from each sweep (the first varies slowest)."""
  out: list[Override] = [{}]
  for s in sweeps:
    out = [_merge([a, b]) for a in out for b in _as_sweep(s)]
  return out


def zipped(*sweeps) -> list[Override]:
  """The i-th entries of every sweep merged; all sweeps must have the same length."""
  lists = [_as_sweep(s) for s in sweeps]
  lengths = {len(s) for s in lists}
  if len(lengths) > 1:
    raise SweepError(f"zipped needs sweeps of equal length, got lengths "
                     f"{[len(s) for s in lists]}")
  return [_merge(parts) for parts in zip(*lists)]


def chain(*sweeps) -> list[Override]:
  """The runs of every sweep, one sweep after the other."""
  return [run for s in sweeps for run in _as_sweep(s)]


# Loading and naming ------------------------------------------------------------------------
def _load_module(path: str):
  if not os.path.isfile(path):
    raise SweepError(f"config file {path!r} does not exist")
  name = "ponder_sweep_" + re.sub(r"\W", "_", os.path.abspath(path))
  loader = importlib.machinery.SourceFileLoader(name, path)  # as config_flags loads configs
  module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
  loader.exec_module(module)
  return module


def load_config(config: str) -> ml_collections.ConfigDict:
  """get_config() of a config file ('file.py' or 'file.py:arg'), e.g. a sweep file's base."""
  path, _, arg = config.partition(":")
  module = _load_module(path)
  if not hasattr(module, "get_config"):
    raise SweepError(f"{path} defines no get_config()")
  return module.get_config(*([arg] if arg else []))


def load_sweep(config: str) -> list[Override]:
  """The overrides of `config` ('file.py' or 'file.py:arg') from its get_sweep()."""
  path, _, arg = config.partition(":")
  module = _load_module(path)
  get_sweep = getattr(module, "get_sweep", None)
  if get_sweep is None:
    raise SweepError(f"{path} defines no get_sweep(); add one returning e.g. "
                     "sweep.product(sweep.values('ponder.steps', [0, 1]), ...)")
  takes_arg = bool(inspect.signature(get_sweep).parameters)
  runs = _as_sweep(get_sweep(arg) if takes_arg else get_sweep())
  if not runs:
    raise SweepError(f"{path}: get_sweep() returned no runs")
  for run in runs:
    for key, value in run.items():
      if not isinstance(key, str) or not key:
        raise SweepError(f"{path}: override key {key!r} must be a dotted config key string")
      if not (isinstance(value, _SCALARS) or (isinstance(value, tuple) and all(
          isinstance(v, _SCALARS) for v in value))):
        raise SweepError(f"{path}: override '{key}' = {value!r}: values must be bool, int, "
                         "float, str or a tuple of those")
  return runs


def flag_value(value: Any) -> str:
  """The command-line text that ml-collections parses back to `value`."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (int, float)):
    return repr(value)
  if isinstance(value, tuple):
    return repr(value)
  return str(value)


def _slug(value: Any) -> str:
  text = flag_value(value) if not isinstance(value, tuple) else "-".join(map(flag_value, value))
  text = re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-.")
  return text or "empty"


def _labels(keys: Iterable[str]) -> dict[str, str]:
  """Each key's shortest dotted suffix that no other key of the sweep shares."""
  keys = sorted(set(keys))
  labels = {}
  for key in keys:
    parts = key.split(".")
    for n in range(1, len(parts) + 1):
      suffix = ".".join(parts[-n:])
      if not any(other != key and (other == suffix or other.endswith("." + suffix))
                 for other in keys):
        break
    labels[key] = suffix
  return labels


def _digest(overrides: Override) -> str:
  canonical = json.dumps(sorted(overrides.items()), default=repr)
  return hashlib.sha1(canonical.encode()).hexdigest()[:8]


def run_names(runs: Sequence[Override]) -> list[str]:
  """Stable, filesystem-safe names, e.g. 'ratio=0.1_steps=3' (sorted; 'base' for none)."""
  labels = _labels(k for run in runs for k in run)
  names = []
  for run in runs:
    name = "_".join(f"{labels[k]}={_slug(run[k])}" for k in sorted(run, key=labels.get)) \
        or "base"
    if len(name) > _MAX_NAME:
      name = name[:_MAX_NAME - 9].rstrip("_=") + "~" + _digest(run)
    names.append(name)
  canonical = [json.dumps(sorted(run.items()), default=repr) for run in runs]
  if len(set(canonical)) < len(canonical):
    twice = next(run for run, c in zip(runs, canonical) if canonical.count(c) > 1)
    raise SweepError(f"the sweep contains the same overrides twice: {twice}")
  # Different overrides that slug alike (e.g. 'a/b' and 'a-b'): a digest tells them apart.
  return [name + "~" + _digest(run) if names.count(name) > 1 else name
          for name, run in zip(names, runs)]


# Planning and checking ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  overrides: Override  # from the sweep: what the run name says
  workdir: str
  args: tuple[str, ...]  # ponder-train's arguments (config, workdir, every override)

  def command(self, program: Sequence[str] = ("ponder-train",)) -> list[str]:
    return [*program, *self.args]


def plan(config: str, workdir: str, runs: Sequence[Override],
         base: Mapping[str, Any] | None = None) -> list[Run]:
  """One Run per override set; `base` overrides (from --config.x=v) apply to every run."""
  base = dict(base or {})
  out = []
  for name, overrides in zip(run_names(runs), runs):
    both = sorted(set(base) & set(overrides))
    if both:
      raise SweepError(f"config key '{both[0]}' is set both on the command line and by the "
                       f"sweep (run {name}); drop one of them")
    run_dir = posixpath.join(workdir, name) if "://" in workdir else os.path.join(workdir, name)
    args = [f"--config={config}", f"--workdir={run_dir}"]
    args += [f"--config.{k}={flag_value(v)}" for k, v in {**base, **overrides}.items()]
    out.append(Run(name, dict(overrides), run_dir, tuple(args)))
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


def _parse(args: Sequence[str]) -> ml_collections.ConfigDict:
  """The config a `ponder-train` given `args` builds (same flag definition as cli.py)."""
  argv = ["ponder-train", *args]
  values_ = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values_, lock_config=True,
                                  sys_argv=argv)
  flags.DEFINE_string("workdir", None, "", flag_values=values_)
  values_(argv)
  return values_.config


def check(config: str, run_plan: Sequence[Run], base: Mapping[str, Any] | None = None) -> None:
  """Checks every run before any starts; raises SweepError naming the run and the key."""
  # pylint: disable=import-outside-toplevel
  from ponder_jax.config import ConfigError
  from ponder_jax.experiment import Experiment
  for run in run_plan:
    where = f"run '{run.name}'"
    reference = load_config(config)
    for key, value in {**dict(base or {}), **run.overrides}.items():
      _check_key(reference, key, value, where)
    try:
      parsed = _parse(run.args)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
      raise SweepError(f"{where}: its command line does not parse: {e}") from e
    for key, value in run.overrides.items():
      got = parsed
      for part in key.split("."):
        got = got[part]
      if got != value:  # e.g. a string the command line would read as something else
        raise SweepError(f"{where}: config key '{key}' = {value!r} reads back as {got!r} from "
                         f"--config.{key}={flag_value(value)}")
    try:
      Experiment.from_config(parsed)
    except ConfigError as e:
      raise SweepError(f"{where}: {e}") from e


# Running and summarising -------------------------------------------------------------------
@dataclasses.dataclass
class Result:
  run: Run
  returncode: int | None = None
  seconds: float = 0.0

  @property
  def status(self) -> str:
    return {None: "not run", 0: "ok"}.get(self.returncode, f"failed ({self.returncode})")


def execute(run_plan: Sequence[Run], parallel: int = 1,
            program: Sequence[str] = (sys.executable, "-m", "ponder_jax.cli"),
            env: Mapping[str, str] | None = None) -> list[Result]:
  """Runs every run as a subprocess, at most `parallel` at a time; output to <run>/train.log.

  A failing run does not stop the others; its status and log path appear in the summary.
  """
  if parallel < 1:
    raise SweepError(f"--parallel={parallel} must be >= 1")
  results = [Result(run) for run in run_plan]
  pending = list(range(len(run_plan)))
  active: dict[int, tuple[subprocess.Popen, Any, float]] = {}
  try:
    while pending or active:
      while pending and len(active) < parallel:
        i = pending.pop(0)
        run = run_plan[i]
        os.makedirs(run.workdir, exist_ok=True)
        log = open(os.path.join(run.workdir, "train.log"), "ab")  # pylint: disable=consider-using-with
        proc = subprocess.Popen(run.command(program), stdout=log, stderr=subprocess.STDOUT,
                                env=dict(env) if env is not None else None)
        active[i] = (proc, log, time.monotonic())
        print(f"[{i + 1}/{len(run_plan)}] started {run.name}", flush=True)
      for i, (proc, log, started) in list(active.items()):
        if proc.poll() is None:
          continue
        log.close()
        results[i].returncode, results[i].seconds = proc.returncode, time.monotonic() - started
        del active[i]
        print(f"[{i + 1}/{len(run_plan)}] {results[i].status}: {run_plan[i].name} "
              f"({results[i].seconds:.0f} s; log {run_plan[i].workdir}/train.log)", flush=True)
      time.sleep(0.2)
  finally:
    for proc, _, _ in active.values():  # interrupted: let every run checkpoint and exit
      proc.terminate()
    for proc, log, _ in active.values():
      proc.wait()
      log.close()
  return results


def summarize(results: Sequence[Result]) -> list[dict[str, Any]]:
  """One row per run: status, overrides, last step, final train loss, final eval losses."""
  from ponder_jax.train.metrics import read_metrics  # pylint: disable=import-outside-toplevel
  rows = []
  for result in results:
    metrics = read_metrics(result.run.workdir) if os.path.isdir(result.run.workdir) else []
    train = [r for r in metrics if "loss" in r]
    evals = [r for r in metrics if any(k.startswith("eval/") for k in r)]
    row: dict[str, Any] = {"run": result.run.name, "status": result.status,
                           "seconds": round(result.seconds, 1)}
    row.update(result.run.overrides)
    row["step"] = max((r["step"] for r in metrics), default=None)
    row["train_loss"] = train[-1]["loss"] if train else None
    if evals:
      row.update({k: v for k, v in evals[-1].items() if k.startswith("eval/")
                  and k.endswith("/loss")})
    rows.append(row)
  return rows


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
  columns: list[str] = []
  for row in rows:
    columns += [k for k in row if k not in columns]
  metric = [c for c in columns if c.startswith("eval/")]
  return [c for c in columns if c not in metric] + sorted(metric)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
  columns = _columns(rows)
  def cell(v):
    if isinstance(v, float):
      return f"{v:.5g}"
    return "-" if v is None else str(v)
  table = [columns] + [[cell(row.get(c)) for c in columns] for row in rows]
  widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
  lines = ["  ".join(text.ljust(w) for text, w in zip(line, widths)).rstrip()
           for line in table]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def write_summary(workdir: str, rows: Sequence[Mapping[str, Any]],
                  results: Sequence[Result]) -> dict[str, str]:
  """summary.csv, summary.json and summary.png (train loss curves, final eval losses)."""
  os.makedirs(workdir, exist_ok=True)
  paths = {ext: os.path.join(workdir, f"summary.{ext}") for ext in ("csv", "json", "png")}
  columns = _columns(rows)
  with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)
  with open(paths["json"], "w", encoding="utf-8") as f:
    json.dump(list(rows), f, indent=2, default=repr)
  _plot(paths["png"], rows, results)
  return paths


def _plot(path: str, rows: Sequence[Mapping[str, Any]], results: Sequence[Result]) -> None:
  # pylint: disable=import-outside-toplevel
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from ponder_jax.train.metrics import read_metrics
  fig, (curves, bars) = plt.subplots(1, 2, figsize=(12, 4.5))
  for result in results:
    points = [(r["step"], r["loss"]) for r in read_metrics(result.run.workdir) if "loss" in r]
    if points:
      curves.plot(*zip(*points), label=result.run.name, linewidth=1)
  curves.set_xlabel("step")
  curves.set_ylabel("train loss (nats/token)")
  curves.grid(alpha=0.3)
  if curves.lines:
    curves.legend(fontsize=7)
  metrics = [c for c in _columns(rows) if c.startswith("eval/")] or ["train_loss"]
  width = 0.8 / len(metrics)
  for j, metric in enumerate(metrics):
    heights = [row.get(metric) if row.get(metric) is not None else 0.0 for row in rows]
    bars.bar([i + j * width for i in range(len(rows))], heights, width,
             label=metric.removeprefix("eval/").removesuffix("/loss"))
  bars.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))])
  bars.set_xticklabels([row["run"] for row in rows], rotation=30, ha="right", fontsize=7)
  bars.set_ylabel("final eval loss" if metrics != ["train_loss"] else "final train loss")
  bars.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def emit(run_plan: Sequence[Run], target: str, launcher_flags: str = "") -> list[str]:
  """Shell lines that launch every run through launch/<target>.py (a pod runs one at a time)."""
  if target not in ("tpu", "local"):
    raise SweepError(f"--emit={target!r} must be 'tpu' or 'local'")
  prefix = ["python", f"launch/{target}.py"] + (["run"] if target == "tpu" else [])
  prefix += shlex.split(launcher_flags)
  return [shlex.join([*prefix, "--", *run.command()]) for run in run_plan]


# The console script ------------------------------------------------------------------------
def _main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS
  config = config_flags.get_config_filename(f["config"])
  base = config_flags.get_override_values(f["config"])
  try:
    run_plan = plan(config, f.workdir, load_sweep(config), base)
    check(config, run_plan, base)
  except SweepError as e:
    print(f"ponder-sweep: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"{len(run_plan)} runs of {config} checked.")
  if f.emit:
    print("\n".join(emit(run_plan, f.emit, f.launcher_flags)))
    return
  if f["dry-run"].value:
    for run in run_plan:
      print(shlex.join(run.command()))
    return
  os.makedirs(f.workdir, exist_ok=True)
  if f.compilation_cache is None:
    f.compilation_cache = os.path.join(f.workdir, "jax_cache")
  with open(os.path.join(f.workdir, "sweep.json"), "w", encoding="utf-8") as out:
    json.dump([{"name": r.name, "overrides": r.overrides, "command": r.command()}
               for r in run_plan], out, indent=2, default=repr)
  env = dict(os.environ)
  if f.compilation_cache:
    # Runs whose programs match (e.g. seeds, data settings) compile once for the whole sweep.
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.abspath(f.compilation_cache))
  results = execute(run_plan, f.parallel, env=env)
  rows = summarize(results)
  paths = write_summary(f.workdir, rows, results)
  print(format_table(rows))
  print(f"summary: {paths['csv']}, {paths['json']}, {paths['png']}")
  failed = [r.run.name for r in results if r.returncode != 0]
  if failed:
    print(f"ponder-sweep: {len(failed)} run(s) failed: {', '.join(failed)} (see their "
          "train.log)", file=sys.stderr)
    sys.exit(1)


def main() -> None:
  config_flags.DEFINE_config_file(
      "config", None, "A config file with get_config() and get_sweep().", lock_config=True)
  flags.DEFINE_string("workdir", None, "Sweep directory; each run goes to <workdir>/<run name>.")
  flags.DEFINE_integer("parallel", 1, "Runs at a time (local execution).")
  flags.DEFINE_enum("emit", "", ["", "tpu", "local"],
                    "Print launch/<emit>.py commands for every run instead of running them.")
  flags.DEFINE_string("launcher_flags", "",
                      "Flags for the emitted launcher, e.g. '--name=pod --zone=us-central2-b "
                      "--accelerator=v4-32'.")
  flags.DEFINE_bool("dry-run", False, "Check every run and print the commands; run nothing.")
  flags.DEFINE_string("compilation_cache", None, "JAX persistent compilation cache shared by "
                      "the runs (default <workdir>/jax_cache; '' for none; an exported "
                      "JAX_COMPILATION_CACHE_DIR wins).")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(_main)


if __name__ == "__main__":
  main()
