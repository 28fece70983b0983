"""The sweep language: what a sweep file's `get_sweep()` returns, and how runs are named.

    from ponder_jax import sweep
    def get_sweep():
      return sweep.product(sweep.values("ponder.steps", [0, 1, 3]),
                           sweep.values("data.pause.ratio", [0.0, 0.1]))   # 6 runs

  values(key, [a, b])      [{key: a}, {key: b}]
  product(s1, s2, ...)     every combination (keys must differ)
  zipped(s1, s2, ...)      the i-th of each, merged (equal lengths)
  chain(s1, s2, ...)       one after the other
  tier(arg, TIERS)         a study file's size (smoke | mechanics | claim) from its argument
  arms(name=overrides...)  named arms: each run carries `arm=<name>` (not a config key) plus
                           its overrides; reports group runs by arm
  stage(name, runs, ...)   a step of a multi-stage study: its own config file and program
                           (ponder-train or ponder-bolt), and `after=<stage>` to start every run
                           of it from every run of an earlier stage (its workdir goes into
                           `init.from_checkpoint`, or the `link` key), or with `from_best=metric`
                           only from those at their arm's best learning rate

`get_sweep()` returns one list of overrides (a one-stage sweep) or a list of stages. A sweep
file may take an argument (`file.py:claim`), which both `get_config` and `get_sweep` receive.

Not here: checking and running the runs (runner.py), tables and plots (summary.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.machinery
import importlib.util
import inspect
import json
import os
import re
from typing import Any, Iterable, Mapping, Sequence

import ml_collections

Override = dict[str, Any]
ARM = "arm"  # the override key that names an arm; never passed to the program
PROGRAMS = ("train", "bolt")  # ponder-train, ponder-bolt
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


def arms(**named: Mapping[str, Any]) -> list[Override]:
  """Named arms, e.g. arms(vanilla={}, ponder={"ponder.steps": 3}): one run each, `arm` set."""
  if not named:
    raise SweepError("arms(...) needs at least one named arm")
  for name, overrides in named.items():
    if ARM in overrides:
      raise SweepError(f"arm '{name}' sets '{ARM}' itself; the arm's name is its keyword")
  return [{ARM: name, **dict(overrides)} for name, overrides in named.items()]


@dataclasses.dataclass(frozen=True)
class Stage:
  """One step of a study: its runs, the config file they use and the program that runs them.

  `config` is a config file ('file.py' or 'file.py:arg'); None means the sweep file itself.
  With `after`, every run here starts once per run of that earlier stage, with `link` set to
  that run's workdir, and the keys in `inherit` copied from that run's overrides. With
  `from_best` (a metric of the earlier stage's runs), only from the runs at their arm's best
  learning rate by that metric's mean over seeds (lower is better unless `higher_is_better`):
  the other children are skipped.
  """
  name: str
  runs: tuple[Override, ...]
  config: str | None = None
  program: str = "train"
  after: str | None = None
  link: str = "init.from_checkpoint"
  inherit: tuple[str, ...] = ()
  from_best: str = ""
  higher_is_better: bool = False


def stage(name: str, runs: Sequence[Mapping[str, Any]] | Mapping[str, Any] = ({},), *,
          config: str | None = None, program: str = "train", after: str | None = None,
          link: str = "init.from_checkpoint", inherit: Sequence[str] = (), from_best: str = "",
          higher_is_better: bool = False) -> Stage:
  if not re.fullmatch(r"[A-Za-z0-9_.-]+", name or ""):
    raise SweepError(f"stage name {name!r} must be a non-empty file name ([A-Za-z0-9_.-])")
  if program not in PROGRAMS:
    raise SweepError(f"stage '{name}': program={program!r} must be one of {PROGRAMS}")
  if from_best and after is None:
    raise SweepError(f"stage '{name}': from_best={from_best!r} needs after=<an earlier stage>")
  return Stage(name, tuple(_as_sweep(runs)), config, program, after, link, tuple(inherit),
               from_best, higher_is_better)


def as_stages(s: Sequence[Stage] | Sequence[Mapping[str, Any]]) -> list[Stage]:
  """A sweep as stages: a plain list of overrides is one unnamed stage of the sweep file."""
  items = list(s)
  if not any(isinstance(item, Stage) for item in items):
    return [Stage("", tuple(_as_sweep(items)))]
  if not all(isinstance(item, Stage) for item in items):
    raise SweepError("get_sweep() mixes stages and plain overrides; wrap the overrides in "
                     "sweep.stage(name, ...)")
  seen: set[str] = set()
  for item in items:
    if item.name in seen:
      raise SweepError(f"two stages are named '{item.name}'")
    if item.after is not None and item.after not in seen:
      raise SweepError(f"stage '{item.name}' runs after '{item.after}', which is not an "
                       f"earlier stage (stages so far: {sorted(seen) or 'none'})")
    if not item.runs:
      raise SweepError(f"stage '{item.name}' has no runs")
    seen.add(item.name)
  return items


def tier(arg: str, tiers: Mapping[str, Any], parts: Sequence[str] = ()) -> tuple[str, Any, str]:
  """A study file's argument 'tier' or 'tier,part' -> (tier, tiers[tier], part or '').

  Studies take their size from a tier (smoke: seconds, for tests; mechanics: CPU-minutes;
  claim: the paper's effect) and, when their stages use different configs, a part."""
  name, _, part = (arg or "").partition(",")
  if name not in tiers:
    raise SweepError(f"unknown tier {name!r}: use one of {', '.join(tiers)} "
                     "(e.g. --config=configs/reproduce/<claim>.py:mechanics)")
  if part and part not in parts:
    raise SweepError(f"unknown part {part!r} of tier {name!r}: use one of {', '.join(parts)}")
  return name, tiers[name], part


# Loading ------------------------------------------------------------------------------------
def _load_module(path: str):
  if not os.path.isfile(path):
    raise SweepError(f"config file {path!r} does not exist")
  name = "ponder_sweep_" + re.sub(r"\W", "_", os.path.abspath(path))
  loader = importlib.machinery.SourceFileLoader(name, path)  # as config_flags loads configs
  module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
  loader.exec_module(module)
  return module


def _call(module, function: str, arg: str):
  takes_arg = bool(inspect.signature(getattr(module, function)).parameters)
  return getattr(module, function)(*([arg] if arg and takes_arg else []))


def load_config(config: str) -> ml_collections.ConfigDict:
  """get_config() of a config file ('file.py' or 'file.py:arg'), e.g. a sweep file's base."""
  path, _, arg = config.partition(":")
  module = _load_module(path)
  if not hasattr(module, "get_config"):
    raise SweepError(f"{path} defines no get_config()")
  return module.get_config(*([arg] if arg else []))


def load_stages(config: str) -> list[Stage]:
  """The stages of `config` ('file.py' or 'file.py:arg') from its get_sweep(), checked."""
  path, _, arg = config.partition(":")
  module = _load_module(path)
  if getattr(module, "get_sweep", None) is None:
    raise SweepError(f"{path} defines no get_sweep(); add one returning e.g. "
                     "sweep.product(sweep.values('ponder.steps', [0, 1]), ...)")
  stages = as_stages(_call(module, "get_sweep", arg))
  for item in stages:
    for run in item.runs:
      for key, value in run.items():
        if not isinstance(key, str) or not key:
          raise SweepError(f"{path}: override key {key!r} must be a dotted config key string")
        if not (isinstance(value, _SCALARS) or (isinstance(value, tuple) and all(
            isinstance(v, _SCALARS) for v in value))):
          raise SweepError(f"{path}: override '{key}' = {value!r}: values must be bool, int, "
                           "float, str or a tuple of those")
  return stages


def load_sweep(config: str) -> list[Override]:
  """The overrides of a one-stage sweep file (every run of every stage for a study)."""
  return [run for item in load_stages(config) for run in item.runs]


def load_reports(config: str) -> list:
  """The sweep file's get_report(): a summary.Report or a list of them (none when undefined)."""
  path, _, arg = config.partition(":")
  module = _load_module(path)
  reports = _call(module, "get_report", arg) if hasattr(module, "get_report") else []
  reports = list(reports) if isinstance(reports, (list, tuple)) else [reports]
  names = [r.name for r in reports]
  if len(set(names)) < len(names):
    raise SweepError(f"{path}: get_report() returns two reports named the same ({names}); "
                     "give each its own Report(name=...)")
  return reports


# Naming -------------------------------------------------------------------------------------
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


def _order(label: str) -> tuple[bool, str]:
  return (label != ARM, label)  # the arm first, then the other keys by label


def _arm_own(key: str, run: Override, runs: Sequence[Override]) -> bool:
  """Whether `key` is part of what the run's arm is: set only by that arm, to one value (the
  arm's name then says it)."""
  if ARM not in run or key == ARM:
    return False
  same_arm = [r for r in runs if r.get(ARM) == run[ARM]]
  return (all(r.get(key) == run[key] for r in same_arm)
          and not any(key in r for r in runs if r.get(ARM) != run[ARM]))


def run_names(runs: Sequence[Override]) -> list[str]:
  """Stable, filesystem-safe names, e.g. 'ratio=0.1_steps=3' (sorted; 'base' for none); a
  run of a named arm is '<arm>_<the other keys>' ('ponder_lr=0.003_seed=0')."""
  labels = _labels(k for run in runs for k in run)
  names = []
  for run in runs:
    keys = sorted((k for k in run if not _arm_own(k, run, runs)), key=lambda k: _order(labels[k]))
    name = "_".join(run[k] if k == ARM else f"{labels[k]}={_slug(run[k])}" for k in keys) \
        or "base"
    name = re.sub(r"[^A-Za-z0-9_.+=~-]+", "-", name)
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
