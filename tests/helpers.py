"""Small shared builders for the tests."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from ponder_jax.config import ModelConfig
from ponder_jax.model.transformer import Transformer

FAMILY_KWARGS = {
    "gpt2": dict(family="gpt2", tie_embeddings=True),
    "neox": dict(family="neox", rotary_pct=0.25),
    "llama": dict(family="llama", n_kv_heads=2),
}


def tiny_config(family: str = "neox", **overrides) -> ModelConfig:
  kwargs = dict(vocab_size=97, d_model=32, n_layers=2, n_heads=4, max_len=64)
  kwargs.update(FAMILY_KWARGS[family])
  kwargs.update(overrides)
  return ModelConfig(**kwargs).validated()


def init_params(cfg: ModelConfig, seed: int = 0, ponder_passes: int = 1):
  model = Transformer(cfg, ponder_passes=ponder_passes)
  variables = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 4), jnp.int32))
  return model, nn.meta.unbox(variables)["params"]


def random_tokens(shape, vocab: int, seed: int = 1):
  return jax.random.randint(jax.random.key(seed), shape, 0, vocab, dtype=jnp.int32)


def with_overrides(config, overrides):
  """`config` (an ml_collections.ConfigDict) with each dotted key of `overrides` set in place."""
  for dotted, value in overrides.items():
    *parents, leaf = dotted.split(".")
    section = config
    for name in parents:
      section = section[name]
    section[leaf] = value
  return config
