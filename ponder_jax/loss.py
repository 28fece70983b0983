"""Next-token cross-entropy for packed rows with pause tokens (METHODS.md §2.1).

The batch is `ponder_jax/batch.py`'s (its contract is written there); the loss reads `tokens`
and, when present, `segment_ids` and `loss_mask` (a batch of `tokens` alone is one document per
row, every token a target). Logits at position t predict token t + 1. The weight of that
prediction is zero when the target is padding, lies in another document than position t, is
masked by `loss_mask`, or is `<pause>`: the model is never trained to *predict* a pause, but
predictions made *from* a pause count and the pause embedding is trained through them.
Everything here is fp32.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp


def target_weights(batch: Mapping[str, jax.Array], pause_id: int | None = None) -> jax.Array:
  """fp32 [B, L-1]: the weight of predicting tokens[:, 1:] from positions [:, :-1]."""
  tokens_BxL = batch["tokens"]
  weights_BxT = jnp.ones(tokens_BxL[:, 1:].shape, jnp.float32)
  if "segment_ids" in batch:
    seg_BxL = batch["segment_ids"]
    weights_BxT *= (seg_BxL[:, 1:] == seg_BxL[:, :-1]) & (seg_BxL[:, 1:] != 0)
  if "loss_mask" in batch:
    weights_BxT *= batch["loss_mask"][:, 1:].astype(jnp.float32)
  if pause_id is not None:
    weights_BxT *= tokens_BxL[:, 1:] != pause_id
  return weights_BxT


def cross_entropy(logits_BxLxV: jax.Array, batch: Mapping[str, jax.Array], *,
                  pause_id: int | None = None, z_loss: float = 0.0, num_sources: int = 0):
  """Returns (mean loss, sums) where sums holds 'loss', 'z_loss', 'tokens' and 'correct' totals.

  The sums add up across microbatches and hosts; the mean is loss / tokens (0 when no token
  is weighted). The mean includes `z_loss * logsumexp(logits)**2` when z_loss > 0. With
  `num_sources` > 0 and a `source_id` field, sums also holds 'source_loss' and 'source_tokens'
  [num_sources], attributed by the source of the target token.
  """
  logits_BxTxV = logits_BxLxV[:, :-1].astype(jnp.float32)
  targets_BxT = batch["tokens"][:, 1:]
  weights_BxT = target_weights(batch, pause_id)
  log_z_BxT = jax.nn.logsumexp(logits_BxTxV, axis=-1)
  target_logit_BxT = jnp.take_along_axis(logits_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
  nll_BxT = log_z_BxT - target_logit_BxT
  correct_BxT = jnp.argmax(logits_BxTxV, axis=-1) == targets_BxT
  sums = {
      "loss": jnp.sum(nll_BxT * weights_BxT),
      "z_loss": jnp.sum(jnp.square(log_z_BxT) * weights_BxT),
      "tokens": jnp.sum(weights_BxT),
      "correct": jnp.sum(correct_BxT * weights_BxT),
  }
  if num_sources and "source_id" in batch:
    source_BxT = jnp.clip(batch["source_id"][:, 1:], 0, num_sources - 1)
    per_source = lambda x_BxT: jnp.zeros(num_sources, jnp.float32).at[source_BxT].add(x_BxT)
    sums["source_loss"] = per_source(nll_BxT * weights_BxT)
    sums["source_tokens"] = per_source(weights_BxT)
  mean = (sums["loss"] + z_loss * sums["z_loss"]) / jnp.maximum(sums["tokens"], 1.0)
  return mean, sums
