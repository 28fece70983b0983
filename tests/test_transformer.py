"""The decoder: families, packing, layer-stack modes, attention kernels, dtypes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ponder_jax.model.transformer import Transformer
from tests.helpers import init_params, random_tokens, tiny_config

FAMILIES = ("gpt2", "neox", "llama")


def _apply(cfg, params, *args):
  return jax.jit(lambda p, *a: Transformer(cfg).apply({"params": p}, *a))(params, *args)


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_documents_do_not_see_each_other(family):
  cfg = tiny_config(family)
  _, params = init_params(cfg)
  doc_a, doc_b = random_tokens((1, 7), cfg.vocab_size, 1), random_tokens((1, 9), cfg.vocab_size, 2)
  packed = jnp.concatenate([doc_a, doc_b], axis=1)
  segments = jnp.array([[1] * 7 + [2] * 9], jnp.int32)
  positions = jnp.array([list(range(7)) + list(range(9))], jnp.int32)
  logits = _apply(cfg, params, packed, positions, segments)
  # Each document's logits equal those of the document alone (positions restart per segment).
  np.testing.assert_allclose(logits[:, :7], _apply(cfg, params, doc_a), atol=1e-5)
  np.testing.assert_allclose(logits[:, 7:], _apply(cfg, params, doc_b), atol=1e-5)
  # Changing document A leaves document B's logits unchanged.
  other = packed.at[:, :7].set(random_tokens((1, 7), cfg.vocab_size, 3))
  changed = _apply(cfg, params, other, positions, segments)
  np.testing.assert_array_equal(changed[:, 7:], logits[:, 7:])
  assert np.abs(np.asarray(changed[:, :7] - logits[:, :7])).max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_stack_modes_remat_and_kernels_agree(family):
  cfg = tiny_config(family)
  _, params = init_params(cfg)
  tokens = random_tokens((2, 12), cfg.vocab_size)
  segments = jnp.array([[1] * 5 + [2] * 7, [1] * 10 + [0] * 2], jnp.int32)
  reference = _apply(cfg, params, tokens, None, segments)
  assert reference.shape == (2, 12, cfg.vocab_size) and reference.dtype == jnp.float32
  for change in (dict(scan_layers=True), dict(remat_policy="full"),
                 dict(scan_layers=True, remat_policy="dots"), dict(attention="xla")):
    variant = dataclasses.replace(cfg, **change)
    np.testing.assert_allclose(_apply(variant, params, tokens, None, segments), reference,
                               atol=1e-5, err_msg=str(change))


def test_layer_gradients_agree_between_loop_and_scan():
  cfg = tiny_config("llama")
  _, params = init_params(cfg)
  tokens = random_tokens((2, 8), cfg.vocab_size)
  grad = lambda c: jax.jit(jax.grad(
      lambda p: jnp.sum(jnp.sin(Transformer(c).apply({"params": p}, tokens)))))(params)
  looped, scanned = grad(cfg), grad(dataclasses.replace(cfg, scan_layers=True, remat_policy="full"))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4), looped, scanned)


def test_bfloat16_matmuls_stay_close_and_keep_fp32_outputs():
  cfg = tiny_config("neox")
  _, params = init_params(cfg)
  tokens = random_tokens((2, 12), cfg.vocab_size)
  f32 = _apply(cfg, params, tokens)
  bf16 = _apply(dataclasses.replace(cfg, dtype="bfloat16"), params, tokens)
  assert bf16.dtype == jnp.float32
  np.testing.assert_allclose(bf16, f32, atol=0.05)


def test_tied_head_reuses_the_token_embedding():
  cfg = tiny_config("gpt2")
  _, params = init_params(cfg)
  assert "lm_head" not in params
  untied = dataclasses.replace(cfg, tie_embeddings=False)
  _, untied_params = init_params(untied)
  assert untied_params["lm_head"].shape == (cfg.d_model, cfg.vocab_size)
