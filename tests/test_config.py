"""Bad configs fail at start with the key and the value in the message."""

import pytest

from ponder_jax.config import ConfigError, ModelConfig, PonderConfig


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
  assert (llama.kv_heads, llama.head_size, llama.ff_size, llama.rotary_dim) == (4, 64, 5632, 64)
  neox = ModelConfig.from_config(dict(family="neox", d_model=512, n_heads=8))
  assert (neox.ff_size, neox.rotary_dim) == (2048, 16)
  assert PonderConfig(steps=1, steps_max=4).max_passes == 5
