"""Evaluation tasks: small declarative specs in one registry, and the task-list syntax.

A task is a `TaskSpec` (a name, a kind, its options and M_inf, the pauses appended to every
prompt). The kinds, and what runner.py measures for each:

  perplexity  perplexity and bits per byte of one `data.sources` entry's held-out split, on the
              very batches and with the very loss of the trainer's eval (so perplexity is
              exp(eval/<source>/loss)); bits per byte compare across vocabularies
  procedural  exact match by greedy generation: prompt = a procedural item's input span, answer =
              its output span (dyck: the closing run; shuffled_dyck: any order of the closes
              still open), per length; items drawn from the generator or read from a shipped set
  math        synthetic math accuracy, `direct` (question -> answer) or `thought` (the model
              writes <SoL><PRIOR> Z <EoL>, then the answer), and for thoughts the share that
              `math_corpus.verify` accepts
  choice      multiple choice by log-likelihood from local JSONL in lm-evaluation-harness's
              convention: `acc` (argmax of the summed log-likelihoods) and `acc_norm` (of the
              log-likelihood per character of the choice)

Task names (`ponder-eval --tasks`, `train.eval_tasks`) are a comma list of:

  ppl                every source of the run with a held-out split (a model without a run: the
                     shipped Shakespeare text)
  ppl:<source>       one source of the run's data.sources
  <task>             a procedural task (identity, reverse, ..., needle) by generation; a run that
                     trains the task is evaluated at its own parameters, at its training length
                     and twice that, otherwise at the registry's lengths
  <task>_long        the shipped set of a sequence or arithmetic task at lengths beyond training
                     (data/eval/procedural/<task>.jsonl)
  needle_haystack    the shipped needle-in-a-haystack set at 2, 5, 10, 20 and 30 pairs
  math_direct, math_thought, math_choice (the shipped math multiple-choice set)
  choice:<path>      any local multiple-choice JSONL (fields: query, choices, gold)
  default            the set that fits the model (see `default_names`)

and `<name>@M` is the same task with M pauses appended to every prompt (pause inference, M_inf).
Nothing here runs a model (runner.py) or reads data (sets.py).
"""

from __future__ import annotations

import dataclasses
import os
import types
from typing import Any, Mapping, Sequence

from ponder_jax.config import ConfigError
from ponder_jax.data import procedural

KINDS = ("perplexity", "procedural", "math", "choice")
SHIPPED = "data:"  # a task file path under the shipped data/ folder
DEFAULT = "default"
PAUSE_SEP = "@"

# The option of each procedural task whose value is an item's "length" (the per-length axis).
# Needle's axis is the haystack: the number of key-value pairs in front of the query.
LENGTH_PARAM = {
    **{task: "length" for task in ("identity", "reverse", "sort", "set", "union", "delete",
                                   "stack", "dyck", "shuffled_dyck")},
    "eca": "steps",
    **{task: "digits" for task in ("addition", "reversed_addition", "multiplication")},
    "needle": "pairs",
}
# Lengths a small model trains at; the on-the-fly tasks use them when the run does not train
# the task. Parameters besides the length are the generator's defaults, except where noted.
_SEQUENCE = (4, 8, 16)
_DEFAULT_LENGTHS = {
    **{task: _SEQUENCE for task in ("identity", "reverse", "sort", "set", "union", "delete",
                                    "stack")},
    "dyck": (16, 32, 64), "shuffled_dyck": (16, 32, 64),
    "eca": (1, 2, 4),
    "addition": (2, 3, 5), "reversed_addition": (2, 5, 10), "multiplication": (2, 3, 5),
    "needle": (1, 5, 10, 20, 30),
}
_DEFAULT_PARAMS = {"eca": {"width": 15}}  # 63 cells a row would not fit a small model
# The shipped sets (sets.py writes them): lengths beyond _DEFAULT_LENGTHS.
LONG_LENGTHS = {
    **{task: (24, 32, 48) for task in ("identity", "reverse", "sort", "set", "union", "delete",
                                       "stack")},
    "addition": (6, 8), "reversed_addition": (12, 16), "multiplication": (6, 7),
}
HAYSTACK_SIZES = (2, 5, 10, 20, 30)
ITEMS_PER_LENGTH = 32
MATH_ITEMS = 64
# Both math modes generate up to this many tokens, so they share one compiled decode loop.
MATH_MAX_NEW_TOKENS = 96


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One task. `options` by kind:

  perplexity  source ('' = every source with a held-out split)
  procedural  task, params (the generator's, besides the length), lengths, items (per length),
              seed; or path (a JSONL set; `data:eval/...` for the shipped ones)
  math        mode ('direct' | 'thought'), items, split ('validation' | 'test'), max_new_tokens,
              form ('auto' | 'raw' | 'posterior': a direct prompt ends after the question, or
              with <SoL><EoL>, the posterior layout in which the answer follows an empty
              latent; auto: posterior iff the run trained math with thoughts)
  choice      path, context_field, choices_field, gold_field, target_delimiter (put between
              context and each choice, lm-evaluation-harness's default ' '), items (0 = all)
  """
  name: str
  kind: str
  options: Mapping[str, Any]
  num_pauses: int = 0

  def with_pauses(self, num_pauses: int) -> "TaskSpec":
    base = self.name.split(PAUSE_SEP)[0]
    name = f"{base}{PAUSE_SEP}{num_pauses}" if num_pauses else base
    return dataclasses.replace(self, name=name, num_pauses=num_pauses)

  def with_options(self, **options: Any) -> "TaskSpec":
    return dataclasses.replace(self, options=types.MappingProxyType({**self.options, **options}))


def _spec(name: str, kind: str, **options: Any) -> TaskSpec:
  return TaskSpec(name, kind, types.MappingProxyType(options))


def _build_registry() -> dict[str, TaskSpec]:
  tasks = {"ppl": _spec("ppl", "perplexity", source="")}
  for task in procedural.PROCEDURAL_TASKS:
    tasks[task] = _spec(task, "procedural", task=task, params=_DEFAULT_PARAMS.get(task, {}),
                        lengths=_DEFAULT_LENGTHS[task], items=ITEMS_PER_LENGTH, seed=0)
  for task in LONG_LENGTHS:
    tasks[f"{task}_long"] = _spec(f"{task}_long", "procedural",
                                  path=f"{SHIPPED}eval/procedural/{task}.jsonl", items=0)
  tasks["needle_haystack"] = _spec("needle_haystack", "procedural",
                                   path=f"{SHIPPED}eval/needle.jsonl", items=0)
  for mode in ("direct", "thought"):
    tasks[f"math_{mode}"] = _spec(f"math_{mode}", "math", mode=mode, items=MATH_ITEMS,
                                  split="test", max_new_tokens=MATH_MAX_NEW_TOKENS, form="auto")
  tasks["math_choice"] = choice_spec("math_choice", f"{SHIPPED}eval/math_choice.jsonl",
                                     target_delimiter="")
  return tasks


def choice_spec(name: str, path: str, *, context_field: str = "query",
                choices_field: str = "choices", gold_field: str = "gold",
                target_delimiter: str = " ", items: int = 0) -> TaskSpec:
  """A multiple-choice task over the JSONL file `path` (lm-evaluation-harness's field names
  by default: the context under 'query', the choices under 'choices', the gold index under
  'gold')."""
  return _spec(name, "choice", path=path, context_field=context_field,
               choices_field=choices_field, gold_field=gold_field,
               target_delimiter=target_delimiter, items=items)


REGISTRY: Mapping[str, TaskSpec] = types.MappingProxyType(_build_registry())


def split_names(text: str | Sequence[str]) -> list[str]:
  """A comma list (or a sequence of such lists) as task names, blanks dropped."""
  parts = [text] if isinstance(text, str) else list(text)
  return [name.strip() for part in parts for name in str(part).split(",") if name.strip()]


def resolve(name: str, *, key: str = "tasks") -> TaskSpec:
  """The spec of one task name (see the module docstring); ConfigError naming `key` if the
  name is unknown or its pause count is not an integer >= 0."""
  base, sep, pauses = name.partition(PAUSE_SEP)
  num_pauses = 0
  if sep:
    if not pauses.isdigit():
      raise ConfigError(key, name, f"'{PAUSE_SEP}' must be followed by the number of pauses "
                        f"M_inf, e.g. {base}{PAUSE_SEP}10")
    num_pauses = int(pauses)
  kind, _, argument = base.partition(":")
  if base in REGISTRY:
    spec = REGISTRY[base]
  elif kind == "ppl" and argument:
    spec = _spec(base, "perplexity", source=argument)
  elif kind == "choice" and argument:
    spec = choice_spec(base, argument)
  else:
    raise ConfigError(key, name, f"unknown task; known tasks are {DEFAULT!r}, "
                      f"{', '.join(sorted(REGISTRY))}, ppl:<source>, choice:<path.jsonl>, "
                      f"each optionally with {PAUSE_SEP}M (M pauses)")
  if num_pauses and spec.kind == "perplexity":
    raise ConfigError(key, name, "perplexity scores the held-out documents exactly as the "
                      "trainer's eval does, which has no prompt to append pauses to "
                      "(data.pause.in_eval puts pauses into the eval stream instead)")
  return spec.with_pauses(num_pauses)


def validate_names(text: str | Sequence[str], *, key: str) -> list[str]:
  """Checks every name of a task list (`default` included); returns the names."""
  names = split_names(text)
  for name in names:
    if name.split(PAUSE_SEP)[0] != DEFAULT:
      resolve(name, key=key)
  return names


def default_names(*, procedural_tasks: Sequence[str] = (), math: bool = False) -> list[str]:
  """What `default` means for a model: perplexity of every held-out source, the procedural
  tasks the run trains (by generation, at and beyond the training length), both math modes if
  the run trains on the math corpus, and the shipped math multiple-choice set."""
  names = ["ppl"]
  names += list(dict.fromkeys(procedural_tasks))
  if math:
    names += ["math_direct", "math_thought"]
  names.append("math_choice")
  return names


def data_path(path: str) -> str:
  """A task file: `data:<relative path>` in the shipped data/ folder
  (`ponder_jax.data.data_dir()`), any other path as given (relative to the working directory)."""
  if path.startswith(SHIPPED):
    from ponder_jax.data import data_dir  # pylint: disable=import-outside-toplevel
    return str(data_dir() / path[len(SHIPPED):])
  return os.path.abspath(os.path.expanduser(path))
