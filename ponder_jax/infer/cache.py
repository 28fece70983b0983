"""One KV cache per ponder pass, and the pondering forward of new tokens over it.

PonderLM's passes are each causal: pass j's keys and values at position t depend only on tokens
<= t. So incremental decoding is exact with s + 1 caches (METHODS.md §1.3): for new tokens,
pass j runs over cache j, its next-token distribution mixes the input embeddings into `cur`,
and the last pass gives the logits. Prefill is the same function over the whole (left-padded)
prompt, with the cache empty.

The cache is an explicit pytree (no Flax mutable collections):
  k, v     [P, layers, B, T, G, K]   P = s + 1 passes, T slots, G kv heads of K dims
  offsets  [B]                       first slot holding a token of row b (left padding before)
  length   []                        slots written so far = the next write slot
Row b's token in slot t has position t - offsets[b], so rows of different prompt lengths share
one write slot and every position is the one a full recompute would use.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from ponder_jax.config import PonderConfig
from ponder_jax.model import attention as attn_lib
from ponder_jax.model.layers import matmul
from ponder_jax.model.ponder import embed_scale, mixture_probs
from ponder_jax.model.transformer import Transformer

# Logical axes of k and v: split over the batch and (with tensor parallelism) the kv heads.
CACHE_AXES = (None, None, "activation_batch", None, "kv_heads", None)


@flax.struct.dataclass
class KVCache:
  k: jax.Array
  v: jax.Array
  offsets: jax.Array
  length: jax.Array

  @classmethod
  def empty(cls, model: Transformer, *, passes: int, offsets_B: jax.Array,
            max_len: int) -> "KVCache":
    """Zeros for `passes` passes of batch len(offsets) and `max_len` slots, in the compute dtype
    (the attention casts keys and values to it anyway, so nothing is lost)."""
    cfg = model.cfg
    shape = (passes, cfg.n_layers, offsets_B.shape[0], max_len, cfg.n_kv_heads, cfg.head_dim)
    zeros = lambda: nn.with_logical_constraint(jnp.zeros(shape, jnp.dtype(cfg.dtype)), CACHE_AXES)
    return cls(k=zeros(), v=zeros(), offsets=offsets_B.astype(jnp.int32),
               length=jnp.zeros((), jnp.int32))

  @property
  def max_len(self) -> int:
    return self.k.shape[3]

  def positions(self, num_new: int) -> jax.Array:
    """[B, L] positions of the next `num_new` slots of every row."""
    slots_L = self.length + jnp.arange(num_new, dtype=jnp.int32)
    return slots_L[None, :] - self.offsets[:, None]

  def key_valid(self) -> jax.Array:
    """[B, T]: slot t holds (or will hold) a token of row b, i.e. is not left padding."""
    return jnp.arange(self.max_len)[None, :] >= self.offsets[:, None]


def extend(model: Transformer, params: Any, cache: KVCache, tokens_BxL: jax.Array, *,
           ponder: PonderConfig, ponder_steps: int) -> tuple[jax.Array, KVCache]:
  """fp32 logits [B, L, V] of the last pass for L new tokens per row, and the cache with their
  keys and values written into every pass. The same math as `ponder.forward` on the whole
  sequence, restricted to the new positions; `ponder_steps` (s) must be static: the cache holds
  s + 1 passes."""
  if cache.k.shape[0] != ponder_steps + 1:
    raise ValueError(f"the cache holds {cache.k.shape[0]} passes, s = {ponder_steps} needs "
                     f"{ponder_steps + 1}")
  apply = lambda *args, method: model.apply({"params": params}, *args, method=method)
  length = tokens_BxL.shape[1]
  positions_BxL = cache.positions(length)
  mask_Bx1xLxT = attn_lib.cache_mask(cache.key_valid(), cache.length, length)
  scale = embed_scale(model, ponder)

  def one_pass(cur_BxLxD, cache_k, cache_v, pass_index):
    h_BxLxD, cache_k, cache_v = apply(cur_BxLxD, positions_BxL, mask_Bx1xLxT, cache_k, cache_v,
                                      pass_index, cache.length, method="extend")
    return apply(h_BxLxD, method="logits"), cache_k, cache_v

  e0_BxLxD = apply(tokens_BxL, method="embed") * scale
  cur_BxLxD = max(ponder_steps, 1) * e0_BxLxD if ponder.multiply_initial else e0_BxLxD
  cache_k, cache_v = cache.k, cache.v
  if ponder_steps:
    e_in_VxD = apply(method="embedding_table") * scale
    dtype = jnp.dtype(model.cfg.dtype)

    def ponder_pass(carry, pass_index):
      cur_BxLxD, cache_k, cache_v = carry
      logits_BxLxV, cache_k, cache_v = one_pass(cur_BxLxD, cache_k, cache_v, pass_index)
      probs_BxLxV = mixture_probs(logits_BxLxV, ponder.top_k)
      return (cur_BxLxD + matmul(probs_BxLxV, e_in_VxD, dtype), cache_k, cache_v), None

    (cur_BxLxD, cache_k, cache_v), _ = jax.lax.scan(
        ponder_pass, (cur_BxLxD, cache_k, cache_v), jnp.arange(ponder_steps, dtype=jnp.int32))
  logits_BxLxV, cache_k, cache_v = one_pass(cur_BxLxD, cache_k, cache_v, ponder_steps)
  cache_k = nn.with_logical_constraint(cache_k, CACHE_AXES)
  cache_v = nn.with_logical_constraint(cache_v, CACHE_AXES)
  return logits_BxLxV, cache.replace(k=cache_k, v=cache_v, length=cache.length + length)
