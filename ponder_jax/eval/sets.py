"""Evaluation items: procedural prompt/answer pairs, math problems, multiple-choice records, and
the shipped eval sets under data/eval/ (written by `python -m ponder_jax.eval.sets`).

Procedural items come from the training generators (data/procedural.py), split into the input
span the model is prompted with and the output span it must generate: the loss span of the
item (the convention of finetune pairs, sources.py), except for the bracket languages, whose
loss span is the whole word. There the prompt is the word up to its last open bracket and the
answer the closing run after it, which a nested (dyck) word determines exactly; for a shuffled
word, whose closes may come in any order, the answer is the closes of every bracket still open,
matched as a multiset. Items are drawn with the pipeline's held-out seed (`seed +
sources.EVAL_SEED_OFFSET`), so they never coincide with training items.

The shipped sets (small, generated, nothing downloaded; see data/README.md):
  eval/procedural/<task>.jsonl   sequence and arithmetic tasks at lengths beyond training
                                 (tasks.LONG_LENGTHS), generator defaults otherwise
  eval/needle.jsonl              needle-in-a-haystack at tasks.HAYSTACK_SIZES pairs
  eval/math_choice.jsonl         math test-split questions with the true answer among four
                                 choices (lm-evaluation-harness fields: query, choices, gold)
One JSON object per line; a procedural line is {"task", "params", "length", "prompt", "answer",
"match"} with prompt and answer in task-local symbols.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from ponder_jax.config import ConfigError
from ponder_jax.data import math_corpus, procedural
from ponder_jax.data.sources import EVAL_SEED_OFFSET
from ponder_jax.eval import tasks as tasks_lib

MATCHES = ("exact", "multiset")
_MAX_DRAWS = 200  # needle: draws per wanted item before its haystack size is declared unreachable


# Procedural items ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProceduralItem:
  """A prompt and its answer in task-local symbols; `length` is its value on the task's length
  axis (tasks.LENGTH_PARAM); `match` is 'exact' or 'multiset' (any order of the answer)."""
  prompt: tuple[int, ...]
  answer: tuple[int, ...]
  length: int
  match: str = "exact"


def split_item(source: procedural.ProceduralSource,
               item: Mapping[str, np.ndarray]) -> tuple[list[int], list[int], str]:
  """(prompt, answer, match) of one generated item (see the module docstring)."""
  tokens = np.asarray(item["tokens"]).tolist()
  if source.task in ("dyck", "shuffled_dyck"):
    k = source.params.k
    last_open = max(i for i, t in enumerate(tokens) if t < k)
    prompt = tokens[:last_open + 1]
    if source.task == "dyck":
      return prompt, tokens[last_open + 1:], "exact"
    counts = np.zeros(k, int)
    for t in prompt:
      counts[t % k] += 1 if t < k else -1
    closes = [b + k for b in range(k) for _ in range(max(counts[b], 0))]
    return prompt, closes, "multiset"
  targets = np.flatnonzero(np.asarray(item["loss_mask"]))
  return tokens[:targets[0]], tokens[targets[0]:targets[-1] + 1], "exact"


def _needle_pairs(prompt: Sequence[int]) -> int:
  return (len(prompt) - 1) // 2  # key value ... key value QUERY


def procedural_items(task: str, *, params: Mapping[str, Any], lengths: Sequence[int],
                     items: int, seed: int = 0, key: str = "tasks") -> list[ProceduralItem]:
  """`items` items of `task` per length in `lengths`, the generator's other parameters from
  `params`; for needle a length is the number of pairs in the haystack."""
  param = tasks_lib.LENGTH_PARAM[task]
  params = {k: v for k, v in params.items() if k != param}
  if task in ("addition", "reversed_addition", "multiplication"):
    params["min_digits"] = 0  # exactly `digits`: the length axis is exact
  out: list[ProceduralItem] = []
  for length in lengths:
    if task == "needle":
      source = procedural.make_procedural_source(task, seed + EVAL_SEED_OFFSET, **params,
                                                 config_key=key)
      if not 1 <= length <= source.params.max_pairs:
        raise ConfigError(f"{key}.lengths", length, f"a needle haystack holds 1 .. "
                          f"max_pairs = {source.params.max_pairs} pairs")
      found, index = 0, 0
      while found < items:
        if index >= _MAX_DRAWS * items:
          raise ConfigError(f"{key}.lengths", length, f"no haystack of {length} pairs in "
                            f"{index} draws")
        prompt, answer, match = split_item(source, source[index])
        index += 1
        if _needle_pairs(prompt) == length:
          out.append(ProceduralItem(tuple(prompt), tuple(answer), length, match))
          found += 1
      continue
    source = procedural.make_procedural_source(task, seed + EVAL_SEED_OFFSET,
                                               **{**params, param: length}, config_key=key)
    for index in range(items):
      prompt, answer, match = split_item(source, source[index])
      out.append(ProceduralItem(tuple(prompt), tuple(answer), length, match))
  return out


def write_procedural_set(path: str, task: str, params: Mapping[str, Any],
                         items: Sequence[ProceduralItem]) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for item in items:
      f.write(json.dumps({"task": task, "params": dict(params), "length": item.length,
                          "prompt": list(item.prompt), "answer": list(item.answer),
                          "match": item.match}) + "\n")


def _is_symbols(value: Any) -> bool:
  return isinstance(value, list) and all(
      isinstance(s, int) and not isinstance(s, bool) and 0 <= s < procedural.MAX_SYMBOLS
      for s in value)


def read_procedural_set(path: str) -> tuple[str, list[ProceduralItem]]:
  """(task, items) of a procedural set file; a malformed line raises ValueError naming the
  file and line."""
  task, out = None, []
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{path}:{line_no}"
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
      if not isinstance(record, dict):
        raise ValueError(f"{where}: not a JSON object")
      for field in ("task", "length", "prompt", "answer"):
        if field not in record:
          raise ValueError(f"{where}: missing field '{field}'")
      if record["task"] not in procedural.PROCEDURAL_TASKS:
        raise ValueError(f"{where}: unknown procedural task {record['task']!r}")
      if task is not None and record["task"] != task:
        raise ValueError(f"{where}: task {record['task']!r}, but earlier lines are {task!r}")
      task = record["task"]
      for field in ("prompt", "answer"):
        if not _is_symbols(record[field]) or not record[field]:
          raise ValueError(f"{where}: '{field}' must be a non-empty list of symbols in "
                           f"0 .. {procedural.MAX_SYMBOLS - 1}")
      match = record.get("match", "exact")
      if match not in MATCHES:
        raise ValueError(f"{where}: 'match' must be one of {MATCHES}, got {match!r}")
      if not isinstance(record["length"], int):
        raise ValueError(f"{where}: 'length' must be an integer")
      out.append(ProceduralItem(tuple(record["prompt"]), tuple(record["answer"]),
                                record["length"], match))
  if task is None:
    raise ValueError(f"{path}: holds no items")
  return task, out


# Math ------------------------------------------------------------------------------------------


def math_records(config: math_corpus.MathCorpusConfig, split: str,
                 count: int) -> list[dict[str, Any]]:
  """The first `count` records of a corpus split (disjoint from training by construction)."""
  corpus = math_corpus.MathCorpus(config, split)
  return [corpus[i] for i in range(min(count, len(corpus)))]


def _distractors(answer: int, rng: np.random.Generator, count: int) -> list[int]:
  """`count` distinct wrong answers near `answer`: off by one or two, by a power of ten, by a
  random amount, or with two digits swapped; never negative."""
  candidates = {answer + d for d in (-2, -1, 1, 2, -10, 10, -100, 100)}
  candidates |= {answer + int(d) for d in rng.integers(-50, 51, 8)}
  text = str(answer)
  if len(text) > 1:
    i = int(rng.integers(len(text) - 1))
    swapped = text[:i] + text[i + 1] + text[i] + text[i + 2:]
    if not swapped.startswith("0"):
      candidates.add(int(swapped))
  candidates = sorted(c for c in candidates if c >= 0 and c != answer)
  return [int(c) for c in rng.choice(candidates, size=count, replace=False)]


def math_choice_records(count: int, *, seed: int = 0, num_choices: int = 4) -> list[dict]:
  """Multiple-choice records from the math corpus's test split: the question as `query`, its
  answer text and `num_choices - 1` near misses written the same way as `choices`, the true
  one's index as `gold` (uniform)."""
  rng = np.random.default_rng(seed)
  out = []
  for record in math_records(math_corpus.MathCorpusConfig(), "test", count):
    answer, text = int(record["answer"]), record["answer_text"]
    stem = text[:len(text) - len(record["answer"])]  # '' / ' x=' / ' Answer: '
    wrong = [stem + str(d) for d in _distractors(answer, rng, num_choices - 1)]
    gold = int(rng.integers(num_choices))
    choices = wrong[:gold] + [text] + wrong[gold:]
    out.append({"query": record["question"], "choices": choices, "gold": gold,
                "kind": record["kind"]})
  return out


# Multiple choice -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChoiceItem:
  context: str
  choices: tuple[str, ...]
  gold: int


def read_choices(path: str, *, context_field: str = "query", choices_field: str = "choices",
                 gold_field: str = "gold") -> list[ChoiceItem]:
  """Multiple-choice records of a JSONL file. `gold` is the index of the right choice, or its
  text (as lm-evaluation-harness accepts). A malformed line or a gold index out of range raises
  ValueError naming the file and line."""
  out = []
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{path}:{line_no}"
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
      if not isinstance(record, dict):
        raise ValueError(f"{where}: not a JSON object")
      for field in (context_field, choices_field, gold_field):
        if field not in record:
          raise ValueError(f"{where}: missing field '{field}'")
      context, choices, gold = record[context_field], record[choices_field], record[gold_field]
      if not isinstance(context, str):
        raise ValueError(f"{where}: '{context_field}' must be a string")
      if not (isinstance(choices, list) and len(choices) >= 2
              and all(isinstance(c, str) and c for c in choices)):
        raise ValueError(f"{where}: '{choices_field}' must be a list of at least two "
                         "non-empty strings")
      if isinstance(gold, str) and gold in choices:
        gold = choices.index(gold)
      if not isinstance(gold, int) or isinstance(gold, bool):
        raise ValueError(f"{where}: '{gold_field}' must be a choice index or one of the "
                         f"choices, got {gold!r}")
      if not 0 <= gold < len(choices):
        raise ValueError(f"{where}: gold index {gold} is out of range for {len(choices)} "
                         "choices")
      out.append(ChoiceItem(context, tuple(choices), gold))
  if not out:
    raise ValueError(f"{path}: holds no records")
  return out


# The shipped sets --------------------------------------------------------------------------------

LONG_ITEMS = 12
NEEDLE_ITEMS = 24
MATH_CHOICE_ITEMS = 200


def write_shipped_sets(out_dir: str) -> list[str]:
  """Writes every shipped set under `out_dir` (data/eval); returns the paths."""
  paths = []
  for task, lengths in tasks_lib.LONG_LENGTHS.items():
    path = os.path.join(out_dir, "procedural", f"{task}.jsonl")
    write_procedural_set(path, task, {}, procedural_items(
        task, params={}, lengths=lengths, items=LONG_ITEMS))
    paths.append(path)
  path = os.path.join(out_dir, "needle.jsonl")
  write_procedural_set(path, "needle", {}, procedural_items(
      "needle", params={}, lengths=tasks_lib.HAYSTACK_SIZES, items=NEEDLE_ITEMS))
  paths.append(path)
  path = os.path.join(out_dir, "math_choice.jsonl")
  with open(path, "w", encoding="utf-8") as f:
    for record in math_choice_records(MATH_CHOICE_ITEMS):
      f.write(json.dumps(record) + "\n")
  paths.append(path)
  return paths


def main(argv: Sequence[str] | None = None) -> None:
  from ponder_jax.data import data_dir  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(description="Writes the shipped eval sets (deterministic).")
  parser.add_argument("--out", default=str(data_dir() / "eval"), help="default: data/eval")
  args = parser.parse_args(argv)
  for path in write_shipped_sets(args.out):
    print(f"{path}: {os.path.getsize(path):,} bytes")


if __name__ == "__main__":
  main()
