"""The decoder: GPT-2, GPT-NeoX (Pythia) and LLaMA blocks behind one config.

The blocks read the family's features (`cfg.features`, config.py: biases, norm, MLP, residual
layout, rotary fraction, learned positions), never its name.

`Transformer` is a Flax linen module applied functionally. Its methods split the forward pass
at the seams pondering needs (model/ponder.py): `embed` (token ids -> E0), `hidden` (input
embeddings -> final-norm hidden states, one full causal pass) and `logits` (-> fp32 logits),
with `embedding_table` exposing E_in for the soft-embedding mixture. `extend` is `hidden` for
cached decoding: L new positions attend to a KV cache that it updates in place (infer/cache.py).

Layer parameters are stacked along a leading `layers` axis in every mode. The stack is applied
either by a Python loop over layer slices (fastest on the CPU) or by `jax.lax.scan`
(`model.scan_layers`: compile time flat in depth, for accelerators). Every parameter and the key
activations carry logical axis names; sharding.py maps them onto the mesh.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from ponder_jax.config import ModelConfig
from ponder_jax.model import attention as attn_lib
from ponder_jax.model.layers import Dense, Norm, matmul, truncated_normal

ACT_BLD = ("activation_batch", "activation_length", "activation_embed")
ACT_BLHK = ("activation_batch", "activation_length", "activation_heads", "activation_kv")
ACT_BLV = ("activation_batch", "activation_length", "activation_vocab")


def init_std(cfg: ModelConfig) -> float:
  """The base weight std: `init_std`, or PonderLM's small init sqrt(2 / (5 d)) when 0."""
  return cfg.init_std or math.sqrt(2.0 / (5.0 * cfg.d_model))


class Attention(nn.Module):
  """Self-attention. With `kv` = (cache_k, cache_v, (pass, layer, write slot)), the new keys and
  values are written into the stacked caches [P, layers, B, T, G, K] at that slot and the
  queries attend to the whole cache row (mask [B, 1, L, T]); returns (out, (cache_k, cache_v))."""
  cfg: ModelConfig
  out_std: float

  @nn.compact
  def __call__(self, x_BxLxD, mask_Bx1xLxL, rope, kv=None):
    cfg = self.cfg
    d, h, g, k = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    dense = functools.partial(Dense, use_bias=cfg.features.bias, dtype=cfg.dtype)
    std = init_std(cfg)
    q_BxLxHxK = dense((d,), (h, k), ("embed",), ("heads", "kv"), std=std, name="query")(x_BxLxD)
    kv_BxLx2xGxK = dense((d,), (2, g, k), ("embed",), (None, "kv_heads", "kv"), std=std,
                         name="key_value")(x_BxLxD)
    k_BxLxGxK, v_BxLxGxK = kv_BxLx2xGxK[:, :, 0], kv_BxLx2xGxK[:, :, 1]
    if rope is not None:
      q_BxLxHxK = attn_lib.apply_rope(q_BxLxHxK, *rope)
      k_BxLxGxK = attn_lib.apply_rope(k_BxLxGxK, *rope)
    q_BxLxHxK = nn.with_logical_constraint(q_BxLxHxK, ACT_BLHK)
    impl = attn_lib.resolve_implementation(cfg.attention, cfg.dtype, k)
    if kv is not None:
      cache_k, cache_v, (pass_index, layer_index, write_index) = kv
      at = (pass_index, layer_index, 0, write_index, 0, 0)
      write = lambda cache, new: jax.lax.dynamic_update_slice(
          cache, new[None, None].astype(cache.dtype), at)
      cache_k, cache_v = write(cache_k, k_BxLxGxK), write(cache_v, v_BxLxGxK)
      row = (pass_index, layer_index, 0, 0, 0, 0)
      k_BxLxGxK = jax.lax.dynamic_slice(cache_k, row, (1, 1) + cache_k.shape[2:])[0, 0]
      v_BxLxGxK = jax.lax.dynamic_slice(cache_v, row, (1, 1) + cache_v.shape[2:])[0, 0]
      impl = "einsum" if impl == "cudnn" else impl  # queries and keys differ in length
    out_BxLxHxK = attn_lib.attention(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, mask_Bx1xLxL,
                                     implementation=impl, dtype=jnp.dtype(cfg.dtype))
    out_BxLxHxK = nn.with_logical_constraint(out_BxLxHxK, ACT_BLHK)
    out_BxLxD = dense((h, k), (d,), ("heads", "kv"), ("embed",), std=self.out_std,
                      name="out")(out_BxLxHxK)
    return out_BxLxD if kv is None else (out_BxLxD, (cache_k, cache_v))


class Mlp(nn.Module):
  cfg: ModelConfig
  out_std: float

  @nn.compact
  def __call__(self, x_BxLxD):
    cfg = self.cfg
    d, f, kind = cfg.d_model, cfg.d_ff, cfg.features.mlp
    dense = functools.partial(Dense, use_bias=cfg.features.bias, dtype=cfg.dtype)
    std = init_std(cfg)
    if kind == "swiglu":  # gate and up projections in one matmul
      gate_up_BxLx2xF = dense((d,), (2, f), ("embed",), (None, "mlp"), std=std,
                              name="gate_up")(x_BxLxD)
      h_BxLxF = jax.nn.silu(gate_up_BxLx2xF[:, :, 0]) * gate_up_BxLx2xF[:, :, 1]
    else:
      h_BxLxF = dense((d,), (f,), ("embed",), ("mlp",), std=std, name="up")(x_BxLxD)
      h_BxLxF = jax.nn.gelu(h_BxLxF, approximate=kind == "gelu_tanh")
    h_BxLxF = nn.with_logical_constraint(h_BxLxF, ("activation_batch", "activation_length",
                                                   "activation_mlp"))
    return dense((f,), (d,), ("mlp",), ("embed",), std=self.out_std, name="down")(h_BxLxF)


class Block(nn.Module):
  """Pre-norm block; with a parallel residual (GPT-NeoX) attention and MLP both read x."""
  cfg: ModelConfig
  out_std: float

  @nn.compact
  def __call__(self, x_BxLxD, mask_Bx1xLxL, rope, kv=None):
    """x [B, L, D] -> x; with a KV cache `kv` (see Attention) -> (x, updated caches)."""
    cfg = self.cfg
    norm = functools.partial(Norm, cfg.features.norm, cfg.norm_eps)
    mlp = Mlp(cfg, self.out_std, name="mlp")
    attended = Attention(cfg, self.out_std, name="attention")(
        norm(name="attention_norm")(x_BxLxD), mask_Bx1xLxL, rope, kv)
    attn_BxLxD, kv = attended if kv is not None else (attended, None)
    if cfg.features.parallel_residual:
      x_BxLxD = x_BxLxD + attn_BxLxD + mlp(norm(name="mlp_norm")(x_BxLxD))
    else:
      x_BxLxD = x_BxLxD + attn_BxLxD
      x_BxLxD = x_BxLxD + mlp(norm(name="mlp_norm")(x_BxLxD))
    x_BxLxD = nn.with_logical_constraint(x_BxLxD, ACT_BLD)
    return x_BxLxD if kv is None else (x_BxLxD, kv)


_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Transformer(nn.Module):
  """Decoder-only LM. `ponder_passes` (s + 1) only deepens the output-projection init scaling."""
  cfg: ModelConfig
  ponder_passes: int = 1

  def setup(self):
    cfg = self.cfg
    std = init_std(cfg)
    self.token_embed = self.param(
        "token_embed", nn.with_logical_partitioning(truncated_normal(std), ("vocab", "embed")),
        (cfg.vocab_size, cfg.d_model), jnp.float32)
    if cfg.features.learned_positions:
      self.position_embed = self.param(
          "position_embed", nn.with_logical_partitioning(truncated_normal(std), (None, "embed")),
          (cfg.max_len, cfg.d_model), jnp.float32)
    self.layers = self.param("layers", self._init_layers)
    self.final_norm = Norm(cfg.features.norm, cfg.norm_eps)
    if not cfg.tie_embeddings:
      self.lm_head = self.param(
          "lm_head", nn.with_logical_partitioning(truncated_normal(std), ("embed", "vocab")),
          (cfg.d_model, cfg.vocab_size), jnp.float32)

  def _block(self) -> Block:
    """An unbound block, applied functionally to one slice of the stacked layer params."""
    out_std = init_std(self.cfg) / math.sqrt(2 * self.cfg.n_layers * self.ponder_passes)
    return Block(self.cfg, out_std, parent=None)

  def _init_layers(self, rng):
    """Initialises n_layers blocks independently and stacks them on a leading 'layers' axis."""
    x = jnp.zeros((1, 1, self.cfg.d_model), jnp.float32)
    mask = attn_lib.attention_mask(None, 1)
    rope = self._rope(jnp.zeros((1, 1), jnp.int32))
    init_one = lambda key: self._block().init(key, x, mask, rope)["params"]
    stacked = jax.vmap(init_one)(jax.random.split(rng, self.cfg.n_layers))
    return jax.tree.map(lambda box: box.add_axis(0, {nn.PARTITION_NAME: "layers"}), stacked,
                        is_leaf=lambda v: isinstance(v, nn.meta.AxisMetadata))

  def _rope(self, positions_BxL):
    r = self.cfg.rotary_dim
    return attn_lib.rope_tables(positions_BxL, r, self.cfg.rope_theta) if r else None

  # The pondering seams ---------------------------------------------------------------------
  def embedding_table(self) -> jax.Array:
    """E_in [V, D]: the input embedding table the ponder mixture is taken over."""
    return self.token_embed

  def embed(self, tokens_BxL: jax.Array) -> jax.Array:
    x_BxLxD = jnp.take(self.token_embed, tokens_BxL, axis=0)
    return nn.with_logical_constraint(x_BxLxD, ACT_BLD)

  def hidden(self, x_BxLxD, positions_BxL=None, segment_ids_BxL=None) -> jax.Array:
    """One full causal pass over input embeddings; returns final-norm hidden states."""
    cfg = self.cfg
    batch, length = x_BxLxD.shape[:2]
    if positions_BxL is None:
      positions_BxL = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    if cfg.features.learned_positions:
      x_BxLxD = x_BxLxD + jnp.take(self.position_embed, positions_BxL, axis=0)
    mask_Bx1xLxL = attn_lib.attention_mask(segment_ids_BxL, length)
    rope = self._rope(positions_BxL)

    block = self._block()

    def layer(x_BxLxD, layer_params):
      return block.apply({"params": layer_params}, x_BxLxD, mask_Bx1xLxL, rope)

    if cfg.remat_policy != "none":
      layer = jax.checkpoint(layer, policy=_REMAT_POLICIES[cfg.remat_policy])
    x_BxLxD = nn.with_logical_constraint(x_BxLxD.astype(jnp.float32), ACT_BLD)
    if cfg.scan_layers:
      x_BxLxD, _ = jax.lax.scan(lambda x, p: (layer(x, p), None), x_BxLxD, self.layers)
    else:
      for i in range(cfg.n_layers):
        x_BxLxD = layer(x_BxLxD, jax.tree.map(lambda p: p[i], self.layers))
    return self.final_norm(x_BxLxD)

  def extend(self, x_BxLxD, positions_BxL, mask_Bx1xLxT, cache_k, cache_v, pass_index,
             write_index):
    """`hidden` for L new positions at cache slots [write_index, write_index + L): each layer
    writes their keys and values into pass `pass_index` of the stacked caches
    [P, layers, B, T, G, K] and attends over the cache row. Returns (hidden, cache_k, cache_v)."""
    cfg = self.cfg
    if cfg.features.learned_positions:
      x_BxLxD = x_BxLxD + jnp.take(self.position_embed, positions_BxL, axis=0)
    rope = self._rope(positions_BxL)
    block = self._block()

    def layer(carry, layer_params, layer_index):
      x_BxLxD, cache_k, cache_v = carry
      kv = (cache_k, cache_v, (pass_index, layer_index, write_index))
      x_BxLxD, (cache_k, cache_v) = block.apply({"params": layer_params}, x_BxLxD,
                                                mask_Bx1xLxT, rope, kv)
      return x_BxLxD, cache_k, cache_v

    carry = (x_BxLxD.astype(jnp.float32), cache_k, cache_v)
    if cfg.scan_layers:
      carry, _ = jax.lax.scan(lambda c, xs: (layer(c, *xs), None), carry,
                              (self.layers, jnp.arange(cfg.n_layers)))
    else:
      for i in range(cfg.n_layers):
        carry = layer(carry, jax.tree.map(lambda p: p[i], self.layers), i)
    x_BxLxD, cache_k, cache_v = carry
    return self.final_norm(x_BxLxD), cache_k, cache_v

  def logits(self, h_BxLxD: jax.Array) -> jax.Array:
    head_DxV = self.token_embed.T if self.cfg.tie_embeddings else self.lm_head
    logits_BxLxV = matmul(h_BxLxD, head_DxV, jnp.dtype(self.cfg.dtype))
    return nn.with_logical_constraint(logits_BxLxV, ACT_BLV)

  def __call__(self, tokens_BxL, positions_BxL=None, segment_ids_BxL=None) -> jax.Array:
    """The plain (non-pondering) forward: fp32 logits [B, L, V]."""
    return self.logits(self.hidden(self.embed(tokens_BxL), positions_BxL, segment_ids_BxL))
