"""Pause-token transforms on token examples (METHODS.md §2.1).

Pretraining (PausePT): `insert_pauses` puts M `<pause>` tokens at uniformly random positions
inside an N-token document and keeps every one of its N tokens, in order: the document grows to
N + M tokens. The paper trims the result back to N (METHODS.md §2.5), which drops a document's
tail (its `<eos>`, a math answer) every time; here nothing is dropped, and a grown document
longer than `data.seq_len` is cut into explicit pieces by the pipeline like any long document.
M is drawn so that pauses are a `ratio` share of the grown document, M/(N + M) = ratio, which
makes `ratio` the pause fraction of the packed rows whatever the document lengths.
Finetuning and inference (PauseFT): `pause_finetune_example` lays out `prompt, M pauses, target`
with the loss on the target only (M = 0 is standard finetuning); `append_pauses` is the
inference prompt.

An example is a dict of equal-length int32 arrays with at least 'tokens' and 'loss_mask'
(`loss_mask[t] = 1` iff token t is a training target, the convention of `ponder_jax.loss`).
Inserted pauses get `loss_mask = 0`; the loss also drops pause targets by itself, so the model is
never trained to predict a pause, only from one.

Not here: where the randomness comes from (the pipeline seeds one generator per item), which
sources get pauses (sources.py) and the pause id (the `Vocabulary` owns it).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np


def expected_pauses(length: int, ratio: float) -> float:
  """ratio * N / (1 - ratio): the mean M that makes pauses a `ratio` share of N + M tokens."""
  if not 0.0 <= ratio < 1.0:
    raise ValueError(f"pause ratio must lie in [0, 1), got {ratio}")
  return ratio * length / (1.0 - ratio)


def num_pauses(length: int, ratio: float, rng: np.random.Generator) -> int:
  """M for an N-token document: `expected_pauses` rounded up with the probability of its
  fractional part, so E[M] is exact for every N. Rounding to nearest would be off by up to half
  a pause per document, a bias of ~1 percentage point on 20-token math documents at ratio 0.1."""
  mean = expected_pauses(length, ratio)
  whole = math.floor(mean)
  return whole + int(rng.random() < mean - whole) if mean > whole else whole


def insert_pauses(example: Mapping[str, np.ndarray], *, ratio: float, pause_id: int,
                  rng: np.random.Generator, keep_ends: bool = True) -> dict[str, np.ndarray]:
  """Pause-pretraining transform of one example; every per-token field is moved consistently.

  The N + M output slots get M = `num_pauses(N, ratio, rng)` pauses at a uniformly random subset
  of the eligible slots and the N original tokens, in order, in the others. With `keep_ends`
  (the default) the first and last slots are not eligible, so a document still starts with its
  first token (bos marks a document start; see sources.py) and ends with its last (eos): a pause
  in front would hide the start, one after the end would predict nothing (its next token lies in
  another packed segment). Per-token fields other than 'tokens' and 'loss_mask' (e.g.
  'source_id') repeat the value of the token that follows the pause, so a pause belongs to the
  document it sits in.
  """
  tokens_N = np.asarray(example["tokens"])
  n = tokens_N.shape[0]
  m = num_pauses(n, ratio, rng)
  ends = 1 if keep_ends else 0
  if m == 0 or n < 2 * ends:
    return {key: np.asarray(value) for key, value in example.items()}
  slots = ends + rng.permutation(n + m - 2 * ends)[:m]  # a uniform m-subset (and fast)
  is_pause_S = np.zeros(n + m, bool)
  is_pause_S[slots] = True
  # Index of the original token each slot shows: a pause points at the next real token (the
  # previous one for a trailing pause, possible only without keep_ends).
  source_S = np.minimum(np.cumsum(~is_pause_S) - ~is_pause_S, n - 1)
  out = {}
  for key, value in example.items():
    value_N = np.asarray(value)
    moved = value_N[source_S]
    if key == "tokens":
      moved = np.where(is_pause_S, np.asarray(pause_id, value_N.dtype), moved)
    elif key == "loss_mask":
      moved = np.where(is_pause_S, np.zeros((), value_N.dtype), moved)
    out[key] = moved
  return out


def pause_finetune_example(prompt_ids: Sequence[int] | np.ndarray,
                           target_ids: Sequence[int] | np.ndarray, *, num_pauses: int,
                           pause_id: int) -> dict[str, np.ndarray]:
  """PauseFT layout `prompt, num_pauses x <pause>, target`, loss on the target tokens only.

  The first target token is predicted from the last pause (or from the prompt's last token when
  num_pauses = 0); prompt and pause positions are never targets.
  """
  if num_pauses < 0:
    raise ValueError(f"num_pauses must be >= 0, got {num_pauses}")
  prompt = np.asarray(prompt_ids, np.int32).reshape(-1)
  target = np.asarray(target_ids, np.int32).reshape(-1)
  tokens = np.concatenate([prompt, np.full(num_pauses, pause_id, np.int32), target])
  loss_mask = np.zeros(tokens.shape, np.int32)
  loss_mask[prompt.size + num_pauses:] = 1
  return {"tokens": tokens, "loss_mask": loss_mask}


def append_pauses(prompt_ids: Sequence[int] | np.ndarray, *, num_pauses: int,
                  pause_id: int) -> np.ndarray:
  """Pause-inference prompt: `num_pauses` pauses appended; decoding starts after the last one."""
  return pause_finetune_example(prompt_ids, [], num_pauses=num_pauses,
                                pause_id=pause_id)["tokens"]
