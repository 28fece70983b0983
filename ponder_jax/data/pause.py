"""Pause-token transforms on token examples (METHODS.md §2.1).

Pretraining (PausePT): `insert_pauses` puts M = round(ratio * N) `<pause>` tokens at uniformly
random positions of an N-token example and trims the result back to N tokens, as the paper does.
Finetuning and inference (PauseFT): `pause_finetune_example` lays out `prompt, M pauses, target`
with the loss on the target only; `append_pauses` is the inference prompt.

An example is a dict of equal-length int32 arrays with at least 'tokens' and 'loss_mask'
(`loss_mask[t] = 1` iff token t is a training target, the convention of `ponder_jax.loss`).
Inserted pauses get `loss_mask = 0`; the loss also drops pause targets by itself, so the model is
never trained to predict a pause, only from one.

Not here: where the randomness comes from (the pipeline seeds one generator per item) and the
pause id (the `Vocabulary` owns it).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def num_pauses(length: int, ratio: float) -> int:
  """M = round(ratio * N): the pauses `insert_pauses` puts into an N-token example."""
  return int(round(ratio * length))


def insert_pauses(example: Mapping[str, np.ndarray], *, ratio: float, pause_id: int,
                  rng: np.random.Generator, keep_first: bool = True) -> dict[str, np.ndarray]:
  """Pause-pretraining transform of one example; every per-token field is moved consistently.

  The N + M output slots get M pauses at a uniformly random subset of slots and the N original
  tokens, in order, in the others; the first N slots are kept. `keep_first` forbids slot 0, so
  a document still starts with its first token (bos marks a document start; see sources.py).
  Per-token fields other than 'tokens' and 'loss_mask' (e.g. 'source_id') repeat the value of
  the token that follows the pause, so a pause belongs to the document it sits in.
  """
  if not 0.0 <= ratio < 1.0:
    raise ValueError(f"pause ratio must lie in [0, 1), got {ratio}")
  tokens_N = np.asarray(example["tokens"])
  n = tokens_N.shape[0]
  m = num_pauses(n, ratio)
  first = 1 if keep_first else 0
  if m == 0 or n <= first:
    return {key: np.asarray(value) for key, value in example.items()}
  slots = first + rng.permutation(n + m - first)[:m]  # a uniform m-subset (and fast)
  is_pause_S = np.zeros(n + m, bool)
  is_pause_S[slots] = True
  is_pause_N = is_pause_S[:n]
  # Index of the original token each kept slot shows: pauses point at the next real token.
  source_N = np.minimum(np.cumsum(~is_pause_S)[:n] - ~is_pause_N, n - 1)
  out = {}
  for key, value in example.items():
    value_N = np.asarray(value)
    moved = value_N[source_N]
    if key == "tokens":
      moved = np.where(is_pause_N, np.asarray(pause_id, value_N.dtype), moved)
    elif key == "loss_mask":
      moved = np.where(is_pause_N, np.zeros((), value_N.dtype), moved)
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
