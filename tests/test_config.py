"""Bad configs fail at start with the key and the value in the message."""

import dataclasses

import jax.numpy as jnp
import pytest

from ponder_jax.config import FEATURES, MLPS, NORMS, ConfigError, ModelConfig, PonderConfig
from ponder_jax.model.transformer import Transformer
from tests.helpers import init_params, random_tokens, tiny_config


@pytest.mark.parametrize("section, message", [
    (dict(d_model=100, n_heads=3), r"'model.n_heads' = 3: must divide model.d_model = 100"),
    (dict(family="mamba"), r"'model.family' = 'mamba': must be one of"),
    (dict(family="llama", n_heads=8, n_kv_heads=3), r"'model.n_kv_heads' = 3: must divide"),
    (dict(family="neox", n_kv_heads=2), r"'model.n_kv_heads' = 2: grouped-query"),
    (dict(n_layers=0), r"'model.n_layers' = 0: must be a positive integer"),
    (dict(dtype="float8"), r"'model.dtype' = 'float8'"),
    (dict(attention="flash"), r"'model.attention' = 'flash'"),
    (dict(d_model_typo=3), r"'model.d_model_typo' = 3: unknown key"),
])
def test_model_config_errors(section, message):
  with pytest.raises(ConfigError, match=message):
    ModelConfig.from_config(section)


@pytest.mark.parametrize("section, message", [
    (dict(steps=-1), r"'ponder.steps' = -1: must be an integer >= 0"),
    (dict(top_k=9000), r"'ponder.top_k' = 9000: exceeds model.vocab_size = 8192"),
    (dict(steps=3, steps_max=2), r"'ponder.steps_max' = 2: must be 0 \(fixed s\) or >= "),
])
def test_ponder_config_errors(section, message):
  with pytest.raises(ConfigError, match=message):
    PonderConfig.from_config(section, vocab_size=8192)


def test_derived_sizes():
  llama = ModelConfig.from_config(dict(family="llama", d_model=2048, n_heads=32, n_kv_heads=4))
  assert (llama.n_kv_heads, llama.head_dim, llama.d_ff, llama.rotary_dim) == (4, 64, 5632, 64)
  neox = ModelConfig.from_config(dict(family="neox", d_model=512, n_heads=8))
  assert (neox.n_kv_heads, neox.head_dim, neox.d_ff, neox.rotary_dim) == (8, 64, 2048, 16)
  assert ModelConfig.from_config(dict(family="gpt2", d_model=512, n_heads=8)).rotary_dim == 0
  assert PonderConfig(steps=1, steps_max=4).max_passes == 5


def test_default_sizes_validate_to_the_explicit_config():
  # 0 means "the family's default"; once validated, the config holds the size itself, so a
  # config written out (a checkpoint, an export) reads back equal.
  implicit = ModelConfig.from_config(dict(family="llama", d_model=256, n_heads=4))
  explicit = ModelConfig.from_config(dict(family="llama", d_model=256, n_heads=4, n_kv_heads=4,
                                          head_dim=64, d_ff=768))
  assert implicit == explicit == implicit.validated()
  assert ModelConfig.from_config(dataclasses.asdict(implicit)) == implicit


def test_every_family_is_a_features_entry():
  for family, features in FEATURES.items():
    assert features.norm in NORMS and features.mlp in MLPS, family
    assert ModelConfig.from_config(dict(family=family)).features is features


def test_a_new_family_is_one_table_entry(monkeypatch):
  # A family the model code has never heard of: GPT-2's blocks with RMSNorm and no biases.
  monkeypatch.setitem(FEATURES, "gpt2_rms", dataclasses.replace(
      FEATURES["gpt2"], norm="rmsnorm", bias=False))
  cfg = dataclasses.replace(tiny_config("gpt2"), family="gpt2_rms").validated()
  _, params = init_params(cfg)
  assert "position_embed" in params and "bias" not in params["final_norm"]
  assert not any("bias" in k for k in params["layers"]["attention"]["query"])
  logits = Transformer(cfg).apply({"params": params}, random_tokens((1, 5), cfg.vocab_size))
  assert logits.shape == (1, 5, cfg.vocab_size) and bool(jnp.isfinite(logits).all())
