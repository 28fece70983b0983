"""The pondering loop against METHODS.md §1.1 written out by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ponder_jax.config import PonderConfig
from ponder_jax.loss import cross_entropy
from ponder_jax.model import ponder
from tests.helpers import init_params, random_tokens, tiny_config

FAMILIES = ("gpt2", "neox", "llama")


def unrolled_forward(model, params, tokens, *, steps, scale_embeds=False, multiply_initial=False,
                     top_k=0):
  """The algorithm as a plain Python loop: no scan, no remat."""
  v = {"params": params}
  e0 = model.apply(v, tokens, method="embed")
  e_in = params["token_embed"]
  if scale_embeds:
    e0, e_in = e0 * math.sqrt(model.cfg.d_model), e_in * math.sqrt(model.cfg.d_model)
  cur = steps * e0 if multiply_initial else e0
  for _ in range(steps):
    logits = model.apply(v, cur, method=lambda m, x: m.logits(m.hidden(x)))
    if top_k:
      order = jnp.sort(logits, axis=-1)[..., ::-1]
      logits = jnp.where(logits >= order[..., top_k - 1:top_k], logits, -jnp.inf)
    cur = cur + jax.nn.softmax(logits, axis=-1) @ e_in
  return model.apply(v, cur, method=lambda m, x: m.logits(m.hidden(x)))


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_steps_is_the_plain_forward(family):
  model, params = init_params(tiny_config(family))
  tokens = random_tokens((2, 12), model.cfg.vocab_size)
  plain = jax.jit(model.apply)({"params": params}, tokens)
  pondered = jax.jit(lambda p, t: ponder.forward(model, p, t, ponder=PonderConfig(steps=0)))(
      params, tokens)
  np.testing.assert_array_equal(plain, pondered)


@pytest.mark.parametrize("family, options", [
    ("gpt2", dict()),
    ("neox", dict()),
    ("llama", dict()),
    ("neox", dict(scale_embeds=True, multiply_initial=True)),
    ("llama", dict(top_k=5)),
])
def test_scan_equals_unrolled_loop(family, options):
  model, params = init_params(tiny_config(family), ponder_passes=4)
  tokens = random_tokens((2, 12), model.cfg.vocab_size)
  cfg = PonderConfig(steps=3, **options)
  got = jax.jit(lambda p, t: ponder.forward(model, p, t, ponder=cfg))(params, tokens)
  want = jax.jit(lambda p, t: unrolled_forward(model, p, t, steps=3, **options))(params, tokens)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  # Pondering changed something: the last pass is not the plain forward.
  assert np.abs(np.asarray(got) - jax.jit(model.apply)({"params": params}, tokens)).max() > 1e-3


@pytest.mark.parametrize("steps", [1, 2])  # s = 1: XLA removes the one-trip scan
def test_gradients_flow_through_every_pass(steps):
  model, params = init_params(tiny_config("neox"), ponder_passes=steps + 1)
  tokens = random_tokens((2, 10), model.cfg.vocab_size)
  cfg = PonderConfig(steps=steps)
  objective = lambda p, f: jnp.sum(jnp.sin(f(p)))
  got = jax.jit(jax.grad(lambda p: objective(
      p, lambda q: ponder.forward(model, q, tokens, ponder=cfg))))(params)
  want = jax.jit(jax.grad(lambda p: objective(
      p, lambda q: unrolled_forward(model, q, tokens, steps=steps))))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4), got, want)
  # The mixture's gradient reaches E_in beyond the embedding rows that were looked up.
  unused = np.setdiff1d(np.arange(model.cfg.vocab_size), np.asarray(tokens))
  assert np.abs(np.asarray(got["token_embed"])[unused]).max() > 0


def test_top_k_equal_to_vocab_is_the_full_mixture():
  model, params = init_params(tiny_config("llama"), ponder_passes=3)
  tokens = random_tokens((2, 9), model.cfg.vocab_size)
  run = lambda cfg: jax.jit(lambda p, t: ponder.forward(model, p, t, ponder=cfg))(params, tokens)
  full = run(PonderConfig(steps=2))
  top_v = run(PonderConfig(steps=2, top_k=model.cfg.vocab_size))
  np.testing.assert_allclose(full, top_v, atol=1e-6)


def test_random_steps_match_fixed_steps():
  model, params = init_params(tiny_config("neox"), ponder_passes=4)
  tokens = random_tokens((2, 8), model.cfg.vocab_size)
  ranged = PonderConfig(steps=1, steps_max=3, multiply_initial=True)
  run = jax.jit(lambda p, t, s: ponder.forward(model, p, t, ponder=ranged, ponder_steps=s))
  for s in (1, 2, 3):
    fixed = jax.jit(lambda p, t: ponder.forward(
        model, p, t, ponder=PonderConfig(steps=s, multiply_initial=True)))(params, tokens)
    np.testing.assert_allclose(run(params, tokens, jnp.int32(s)), fixed, atol=1e-5)
  drawn = {int(ponder.sample_steps(ranged, jax.random.key(i))) for i in range(50)}
  assert drawn == {1, 2, 3}


def _hlo_size(steps: int) -> int:
  model, params = init_params(tiny_config("neox"))
  tokens = random_tokens((2, 8), model.cfg.vocab_size)
  grad = jax.grad(lambda p: ponder.forward(model, p, tokens,
                                           ponder=PonderConfig(steps=steps)).sum())
  return len(jax.jit(grad).lower(params).as_text())


def test_scan_is_not_unrolled():
  small, large = _hlo_size(2), _hlo_size(8)
  assert abs(large - small) / small < 0.10, (small, large)


def test_remat_saves_memory_at_every_step_count():
  """XLA's temporary memory of the gradient: remat keeps one pass's activations, s = 1 included."""
  model, params = init_params(tiny_config("neox", vocab_size=2048))
  tokens = random_tokens((8, 64), model.cfg.vocab_size)

  def temp_bytes(steps, remat):
    cfg = PonderConfig(steps=steps, remat=remat)
    grad = jax.grad(lambda p: ponder.forward(model, p, tokens, ponder=cfg).sum())
    return jax.jit(grad).lower(params).compile().memory_analysis().temp_size_in_bytes

  one, two = temp_bytes(1, True), temp_bytes(2, True)
  assert one < 0.9 * temp_bytes(1, False), one
  assert two < 0.5 * temp_bytes(2, False), two
  assert one <= 1.05 * two, (one, two)


def test_depth_scaled_output_init():
  cfg = tiny_config("neox", d_model=64, n_layers=4, init_std=0.0)
  _, params = init_params(cfg, ponder_passes=4)
  base = math.sqrt(2 / (5 * 64))
  out = np.asarray(params["layers"]["mlp"]["down"]["kernel"])
  up = np.asarray(params["layers"]["mlp"]["up"]["kernel"])
  # A +-3 sigma truncated normal has std 0.986 sigma.
  np.testing.assert_allclose(up.std(), 0.986 * base, rtol=0.05)
  np.testing.assert_allclose(out.std(), 0.986 * base / math.sqrt(2 * 4 * 4), rtol=0.05)
  assert np.abs(up).max() <= 3 * base + 1e-7


@pytest.mark.parametrize("options", [dict(scale_embeds=True), dict(scale_embeds=True,
                                                                    multiply_initial=True)])
def test_fixed_and_drawn_zero_steps_are_one_model(options):
  """s = 0 fixed and s = 0 drawn under steps_max scale E0 alike (issue 10, item 4)."""
  model, params = init_params(tiny_config("neox"), ponder_passes=3)
  tokens = random_tokens((2, 12), model.cfg.vocab_size)
  fixed = jax.jit(lambda p, t: ponder.forward(model, p, t, ponder=PonderConfig(
      steps=0, **options)))(params, tokens)
  drawn = jax.jit(lambda p, t, s: ponder.forward(model, p, t, ponder=PonderConfig(
      steps=0, steps_max=2, **options), ponder_steps=s))(params, tokens, jnp.asarray(0))
  np.testing.assert_allclose(fixed, drawn, atol=1e-6, rtol=1e-6)
  # At s = 0 multiply_initial multiplies by max(s, 1) = 1: only the sqrt(d) scale remains.
  want = jax.jit(lambda p, t: unrolled_forward(model, p, t, steps=0, scale_embeds=True))(
      params, tokens)
  np.testing.assert_allclose(fixed, want, atol=1e-5, rtol=1e-5)


# Selective remat and the chunked vocabulary mixture (issue 15, items 5-6) ----------------------
POLICY_ARMS = [dict(remat_policy="full"), dict(remat_policy="vocab"),
               dict(remat_policy="vocab", vocab_chunk=7), dict(remat_policy="full", vocab_chunk=7)]


@pytest.mark.parametrize("steps", [0, 1, 3])
@pytest.mark.parametrize("options", [dict(), dict(top_k=5, scale_embeds=True)])
def test_remat_policies_and_chunks_give_todays_loss_and_gradients(steps, options):
  """Every policy and chunking is the stored-everything path's loss and gradients (f32)."""
  model, params = init_params(tiny_config("neox"), ponder_passes=4)
  tokens = random_tokens((2, 12), model.cfg.vocab_size)

  def loss_and_grads(**arm):
    cfg = PonderConfig(steps=steps, **options, **arm).validated()
    objective = lambda p: cross_entropy(ponder.forward(model, p, tokens, ponder=cfg),
                                        {"tokens": tokens})[0]
    return jax.jit(jax.value_and_grad(objective))(params)

  want_loss, want_grads = loss_and_grads(remat=False)
  for arm in POLICY_ARMS:
    loss, grads = loss_and_grads(**arm)
    np.testing.assert_allclose(loss, want_loss, atol=1e-5, rtol=1e-5, err_msg=str(arm))
    jax.tree.map(lambda a, b, arm=arm: np.testing.assert_allclose(
        a, b, atol=1e-5, rtol=1e-5, err_msg=str(arm)), grads, want_grads)


@pytest.mark.parametrize("top_k", [0, 3])
def test_vocab_mixture_matches_the_plain_mixture_with_ragged_chunks(top_k):
  """softmax(h W) E and its VJP, chunked over rows that do not divide evenly, tied head too."""
  kh, kw, ke, kg = jax.random.split(jax.random.key(0), 4)
  h, head = jax.random.normal(kh, (11, 6)), jax.random.normal(kw, (6, 13))
  table, g = jax.random.normal(ke, (13, 6)), jax.random.normal(kg, (11, 6))
  plain = lambda h, w, e: ponder.mixture_probs(h @ w, top_k) @ e
  want, want_vjp = jax.vjp(plain, h, head, table)
  for chunk in (0, 4, 11, 32):
    got, got_vjp = jax.vjp(lambda h, w, e, c=chunk: ponder.vocab_mixture(
        h, w, e, top_k, jnp.float32, c), h, head, table)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    for a, b in zip(got_vjp(g), want_vjp(g)):
      np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)


def test_chunked_mixture_keeps_no_vocabulary_sized_buffers():
  """XLA's temporary memory of the gradient at s = 3: with the mixture over row chunks a full
  remat stays near s = 0, and the vocab policy keeps no [B, L, V] array per pass."""
  model, params = init_params(tiny_config("neox", vocab_size=4096))
  tokens = random_tokens((32, 64), model.cfg.vocab_size)  # 2 blocks of CPU_VOCAB_CHUNK rows

  def temp_bytes(steps, **arm):
    cfg = PonderConfig(steps=steps, **arm)
    grad = jax.grad(lambda p: cross_entropy(ponder.forward(model, p, tokens, ponder=cfg),
                                            {"tokens": tokens})[0])
    return jax.jit(grad).lower(params).compile().memory_analysis().temp_size_in_bytes

  vocab_bytes = 32 * 64 * 4096 * 4  # one [B, L, V] f32 array
  zero = temp_bytes(0)
  full = temp_bytes(3, remat_policy="full")
  chunked = temp_bytes(3, remat_policy="full", vocab_chunk=ponder.CPU_VOCAB_CHUNK)
  vocab, stored = temp_bytes(3, remat_policy="vocab"), temp_bytes(3, remat=False)
  assert chunked < full and chunked < zero + vocab_bytes, (zero, chunked, full)
  assert temp_bytes(3) == chunked  # 'auto' on the CPU: full remat, the mixture over row blocks
  # Stored activations keep logits and probabilities of every pass; the vocab policy none.
  assert stored - vocab > 3 * vocab_bytes, (stored, vocab)
