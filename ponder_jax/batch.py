"""The batch: one step's rows of packed token sequences, as the data pipeline builds them on each
host, the sharding code assembles them into global arrays, and the train step and the loss read
them. Its contract is written here and nowhere else.

A `Batch` is a dict of int32 arrays, every one [B, L]: B rows (host-local numpy rows from the
pipeline, or global `jax.Array`s split over the mesh's batch axes) of L = data.seq_len tokens.

  field        meaning                                                      on padding
  tokens       token ids                                                    vocab.pad_id
  segment_ids  1, 2, ... per packed document (or piece of one, see          0
               data/pipeline.py); attention never crosses a segment
  positions    position within the segment, from 0 (RoPE, learned tables)   0
  loss_mask    1 where the token may be a training *target*: procedural      0
               output spans, finetune targets, everything for text and
               thoughts; 0 on pauses
  source_id    index into `data.spec.source_names` of the token's source    -1
               (per-source losses)

Logits at position t predict token t + 1; the loss (loss.py) weighs that prediction with zero when
the target is padding, in another segment, masked by `loss_mask` or a `<pause>`. The model and
the loss also take a batch of `tokens` alone (one document per row, every token a target); the
pipeline always fills all five fields.

Not here: how rows are packed (data/pipeline.py), how they are sharded (sharding.py).
"""

from __future__ import annotations

from typing import Mapping, TypedDict

import jax
import numpy as np

FIELDS = ("tokens", "segment_ids", "positions", "loss_mask", "source_id")
DTYPE = np.int32

Array = np.ndarray | jax.Array


class Batch(TypedDict):
  """int32 [B, L] arrays; see the module docstring for each field's meaning."""
  tokens: Array
  segment_ids: Array
  positions: Array
  loss_mask: Array
  source_id: Array


def padding_values(pad_id: int) -> dict[str, int]:
  """The value each field holds on padding: no token, no segment, no target, no source."""
  return {"tokens": pad_id, "segment_ids": 0, "positions": 0, "loss_mask": 0, "source_id": -1}


def empty_batch(batch_size: int, seq_len: int, pad_id: int) -> Batch:
  """An all-padding host batch [batch_size, seq_len] (no segment, no weighted target)."""
  return Batch(**{field: np.full((batch_size, seq_len), value, DTYPE)
                  for field, value in padding_values(pad_id).items()})


def pad_rows(batch: Mapping[str, np.ndarray], batch_size: int, pad_id: int) -> Batch:
  """`batch` with all-padding rows appended up to `batch_size` rows."""
  rows, seq_len = np.shape(batch["tokens"])
  filler = empty_batch(batch_size - rows, seq_len, pad_id)
  return Batch(**{field: np.concatenate([batch[field], filler[field]]) for field in FIELDS})


def abstract_batch(batch_size: int, seq_len: int,
                   sharding: jax.sharding.Sharding | None = None) -> Batch:
  """A batch of ShapeDtypeStructs, for compiling a step without data."""
  return Batch(**{field: jax.ShapeDtypeStruct((batch_size, seq_len), DTYPE, sharding=sharding)
                  for field in FIELDS})
