"""Every family keeps its logical-axis shardings on a simulated 8-device mesh."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from ponder_jax import sharding
from ponder_jax.config import ConfigError, PonderConfig
from ponder_jax.model import ponder
from ponder_jax.model.transformer import Transformer
from tests.helpers import random_tokens, tiny_config


def test_mesh_fill_and_errors():
  mesh = sharding.make_mesh({"data": -1, "fsdp": 2, "tensor": 2})
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  with pytest.raises(ConfigError, match="mesh.ici.*needs 12 devices, but 8"):
    sharding.make_mesh({"data": 3, "fsdp": 2, "tensor": 2})
  with pytest.raises(ConfigError, match="mesh.ici.*cannot fill"):
    sharding.make_mesh({"data": -1, "fsdp": 3})
  with pytest.raises(ConfigError, match="mesh.rules"):
    sharding.logical_rules("zero3")


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
def test_sharded_forward_matches_single_device(family):
  cfg = tiny_config(family, d_model=64, n_heads=4, vocab_size=128)
  model = Transformer(cfg, ponder_passes=2)
  ponder_cfg = PonderConfig(steps=1)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  rules = sharding.logical_rules("fsdp_tp")
  tokens = random_tokens((8, 16), cfg.vocab_size)
  init = lambda rng: model.init(rng, tokens[:1, :4])
  abstract = jax.eval_shape(init, jax.random.key(0))
  shardings = sharding.logical_sharding(abstract, mesh, rules)
  expected = {
      "token_embed": ("tensor", "fsdp"),
      "layers/attention/query/kernel": (None, "fsdp", "tensor", None),
      "layers/attention/out/kernel": (None, "tensor", None, "fsdp"),
      "layers/mlp/down/kernel": (None, "tensor", "fsdp"),
  }
  flat = {"/".join(k.key for k in path): s for path, s in
          jax.tree_util.tree_flatten_with_path(shardings["params"])[0]}
  for name, spec in expected.items():
    assert tuple(flat[name].spec) == spec, (name, flat[name].spec)

  variables = jax.jit(init, out_shardings=shardings)(jax.random.key(0))
  params = nn.meta.unbox(variables)["params"]
  down = params["layers"]["mlp"]["down"]["kernel"]
  assert down.sharding.spec == flat["layers/mlp/down/kernel"].spec

  forward = lambda p, t: ponder.forward(model, p, t, ponder=ponder_cfg)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    sharded_tokens = jax.device_put(tokens, sharding.batch_sharding(mesh))
    logits = jax.jit(forward)(params, sharded_tokens)
  assert logits.sharding.spec[0] == ("data", "fsdp")
  assert logits.sharding.spec[2] == "tensor"

  local = jax.device_get(params)
  want = jax.jit(forward)(local, tokens)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(want), atol=1e-5, rtol=1e-5)
