"""Datasets of the shipped lm-evaluation-harness tasks (`custom_dataset: !function loaders.X`):
built from what the repository ships or generates, so the tasks run offline."""

from __future__ import annotations

import json

import datasets

from ponder_jax.data import math_corpus, sources
from ponder_jax.data.vocab import ByteVocabulary
from ponder_jax.eval import sets, tasks

MATH_QUESTIONS = 100
SHAKESPEARE_DOCUMENTS = 40


def math_choice(**unused) -> dict[str, datasets.Dataset]:
  """The shipped math multiple-choice set (ponder-eval's `math_choice`)."""
  del unused  # lm-eval passes the task's metadata
  with open(tasks.data_path(tasks.REGISTRY["math_choice"].options["path"]), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return {"test": datasets.Dataset.from_list(rows)}


def math_questions(**unused) -> dict[str, datasets.Dataset]:
  """Math test-split questions and their answer texts (ponder-eval's `math_direct`, raw form)."""
  del unused
  records = sets.math_records(math_corpus.MathCorpusConfig(), "test", MATH_QUESTIONS)
  rows = [{"query": r["question"], "answer": r["answer_text"], "kind": r["kind"]}
          for r in records]
  return {"test": datasets.Dataset.from_list(rows)}


def shakespeare(**unused) -> dict[str, datasets.Dataset]:
  """The first held-out documents of the shipped Shakespeare text (the text source's eval
  split, as the trainer's eval reads it)."""
  del unused
  spec = sources.validate_source("shakespeare", sources.source_config("text"))
  held_out = sources.open_source(spec, ByteVocabulary(), "eval")
  rows = [{"text": held_out[i][1]} for i in range(min(SHAKESPEARE_DOCUMENTS, len(held_out)))]
  return {"test": datasets.Dataset.from_list(rows)}
