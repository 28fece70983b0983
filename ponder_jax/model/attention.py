"""Causal self-attention with segment masking for packed rows, rotary embeddings and GQA.

Packed rows carry `segment_ids` (1, 2, ... per document, 0 for padding) and `positions` that
restart at 0 in every segment: a token attends only to earlier tokens of its own segment, and
rotary / learned positions are the in-document positions. Cached decoding (infer/) attends L new
queries at slots [w, w + L) to every slot of a KV cache, masked by `cache_mask`. The kernel is
picked by platform: cuDNN flash attention on GPU with 16-bit inputs, an einsum with an explicit
mask elsewhere (faster than `jax.nn.dot_product_attention`'s XLA path on the CPU).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG_INF = -1e30


def attention_mask(segment_ids_BxL: jax.Array | None, length: int) -> jax.Array:
  """Boolean [B or 1, 1, L, L]: causal, and within the same segment when segments are given."""
  causal_LxL = jnp.tril(jnp.ones((length, length), dtype=jnp.bool_))
  if segment_ids_BxL is None:
    return causal_LxL[None, None]
  same_BxLxL = segment_ids_BxL[:, :, None] == segment_ids_BxL[:, None, :]
  return (causal_LxL[None] & same_BxLxL)[:, None]


def cache_mask(key_valid_BxT: jax.Array, write_index: jax.Array, length: int) -> jax.Array:
  """Boolean [B, 1, L, T] for L queries at cache slots [w, w + L): a key slot is visible when
  it holds a token of the row (`key_valid`, False on left padding) and is not in the future."""
  slots_T = jnp.arange(key_valid_BxT.shape[1])
  query_slots_L = write_index + jnp.arange(length)
  causal_LxT = slots_T[None, :] <= query_slots_L[:, None]
  return (key_valid_BxT[:, None, :] & causal_LxT[None])[:, None]


def rope_tables(positions_BxL: jax.Array, rotary_dim: int, theta: float):
  """(sin, cos), each [B, L, rotary_dim], for GPT-NeoX / LLaMA style (rotate-half) RoPE."""
  inv_freq_R2 = 1.0 / theta ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim)
  angles_BxLxR2 = positions_BxL.astype(jnp.float32)[..., None] * inv_freq_R2
  angles_BxLxR = jnp.concatenate([angles_BxLxR2, angles_BxLxR2], axis=-1)
  return jnp.sin(angles_BxLxR), jnp.cos(angles_BxLxR)


def apply_rope(x_BxLxHxK: jax.Array, sin_BxLxR: jax.Array, cos_BxLxR: jax.Array) -> jax.Array:
  """Rotates the first R dims of every head; the remaining K - R pass through."""
  r = sin_BxLxR.shape[-1]
  rot, rest = x_BxLxHxK[..., :r], x_BxLxHxK[..., r:]
  half = r // 2
  rotated_half = jnp.concatenate([-rot[..., half:], rot[..., :half]], axis=-1)
  sin, cos = sin_BxLxR[:, :, None, :], cos_BxLxR[:, :, None, :]
  return jnp.concatenate([rot * cos + rotated_half * sin, rest], axis=-1)


def einsum_attention(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, mask_Bx1xLxL, dtype) -> jax.Array:
  """Reference attention; G kv heads are shared by H / G query heads each."""
  b, l, h, kd = q_BxLxHxK.shape
  g = k_BxLxGxK.shape[2]
  q_BxLxGxRxK = (q_BxLxHxK * kd ** -0.5).reshape(b, l, g, h // g, kd).astype(dtype)
  scores_BxGxRxLxL = jnp.einsum("blgrk,bmgk->bgrlm", q_BxLxGxRxK, k_BxLxGxK.astype(dtype),
                                preferred_element_type=jnp.float32)
  scores_BxGxRxLxL = jnp.where(mask_Bx1xLxL[:, :, None], scores_BxGxRxLxL, _NEG_INF)
  probs_BxGxRxLxL = jax.nn.softmax(scores_BxGxRxLxL, axis=-1)
  out_BxLxGxRxK = jnp.einsum("bgrlm,bmgk->blgrk", probs_BxGxRxLxL.astype(dtype),
                             v_BxLxGxK.astype(dtype), preferred_element_type=jnp.float32)
  return out_BxLxGxRxK.reshape(b, l, h, kd)


def resolve_implementation(requested: str, dtype, head_dim: int) -> str:
  """'auto' -> 'cudnn' on GPU for 16-bit inputs and supported head sizes, else 'einsum'."""
  if requested != "auto":
    return requested
  on_gpu = jax.default_backend() == "gpu"
  cudnn_ok = (jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0
              and head_dim <= 128)
  return "cudnn" if on_gpu and cudnn_ok else "einsum"


def attention(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, mask_Bx1xLxL, *, implementation: str,
              dtype) -> jax.Array:
  """Dispatches to the chosen kernel; all return fp32 [B, L, H, K]."""
  if implementation == "einsum":
    return einsum_attention(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, mask_Bx1xLxL, dtype)
  # jax.nn's kernels: causal handled natively; the mask carries the segment structure.
  is_cudnn = implementation == "cudnn"
  qkv = [t.astype(dtype) for t in (q_BxLxHxK, k_BxLxGxK, v_BxLxGxK)]
  mask = mask_Bx1xLxL if mask_Bx1xLxL.shape[0] > 1 or not is_cudnn else None
  out = jax.nn.dot_product_attention(*qkv, mask=mask, is_causal=is_cudnn,
                                     implementation=implementation)
  return out.astype(jnp.float32)
