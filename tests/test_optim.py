"""The optax chain: schedules, the weight-decay mask and config errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from ponder_jax.config import ConfigError
from ponder_jax.train import optim


def _cfg(**kw):
  cfg = optim.default_optim_config()
  cfg.update(kw)
  return cfg


@pytest.mark.parametrize("schedule", optim.SCHEDULES)
def test_schedules_warm_up_then_reach_the_floor(schedule):
  cfg = _cfg(schedule=schedule, lr=1.0, warmup_steps=10, min_lr_ratio=0.1, decay_fraction=0.5)
  lr = optim.learning_rate_schedule(cfg, total_steps=110)
  assert float(lr(0)) == 0.0
  np.testing.assert_allclose(float(lr(5)), 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(lr(10)), 1.0, rtol=1e-6)
  final = float(lr(110))
  np.testing.assert_allclose(final, 1.0 if schedule == "constant" else 0.1, rtol=1e-5)
  if schedule == "wsd":  # stable until the decay window, the last half of 100 steps
    np.testing.assert_allclose(float(lr(59)), 1.0, rtol=1e-6)
    assert float(lr(85)) < 1.0


def test_weight_decay_mask_skips_norms_biases_and_embeddings():
  params = {"token_embed": jnp.ones((4, 2)), "lm_head": jnp.ones((2, 4)),
            "final_norm": {"scale": jnp.ones(2), "bias": jnp.ones(2)},
            "layers": {"mlp": {"up": {"kernel": jnp.ones((1, 2, 3)), "bias": jnp.ones((1, 3))}}}}
  mask = optim.weight_decay_mask(params, decay_embeddings=False)
  assert mask["layers"]["mlp"]["up"] == {"kernel": True, "bias": False}
  assert mask["final_norm"] == {"scale": False, "bias": False}
  assert not mask["token_embed"] and not mask["lm_head"]
  assert optim.weight_decay_mask(params, decay_embeddings=True)["token_embed"]


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_every_optimizer_decreases_a_quadratic(name):
  import optax
  opt, _ = optim.make_optimizer(_cfg(name=name, lr=0.05, warmup_steps=0, weight_decay=0.0),
                                total_steps=100)
  params = {"layers": {"w": {"kernel": jnp.full((3, 3), 2.0)}}}
  state = opt.init(params)
  for _ in range(20):
    grads = {"layers": {"w": {"kernel": 2 * params["layers"]["w"]["kernel"]}}}
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  assert float(jnp.abs(params["layers"]["w"]["kernel"]).max()) < 2.0


@pytest.mark.parametrize("key, value, message", [
    ("name", "sgd", "'optim.name' = 'sgd'"),
    ("schedule", "step", "'optim.schedule' = 'step'"),
    ("lr", 0.0, "'optim.lr' = 0.0: must be positive"),
    ("min_lr_ratio", 2.0, "'optim.min_lr_ratio' = 2.0"),
])
def test_bad_optim_config(key, value, message):
  with pytest.raises(ConfigError, match=message):
    optim.make_optimizer(_cfg(**{key: value}), total_steps=10)
