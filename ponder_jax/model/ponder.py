"""PonderLM's pondering loop (METHODS.md §1.1), as a pure function of the params.

    E0  = embed(x)                      (x sqrt(d) with scale_embeds; x s with multiply_initial)
    cur = E0
    repeat s times (jax.lax.scan):      P = softmax(logits(cur));  cur = cur + P @ E_in
    return logits(cur)                  the loss sees only this last pass

Every position ponders in parallel, so each step is one more full causal forward with the same
weights; gradients flow through every pass and through the softmax mixture. Each scanned step is
rematerialised (`rematerialized`), so the backward keeps only the carried embeddings `cur` per
step plus one pass's activations, and compile time does not grow with s. With `ponder.steps_max`
the number of steps is a traced value drawn per batch: the scan runs steps_max iterations and
skips those beyond s with `lax.cond`, so a batch costs s + 1 passes, not steps_max + 1.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ponder_jax.config import PonderConfig
from ponder_jax.model.layers import matmul
from ponder_jax.model.transformer import Transformer


def mixture_probs(logits_BxLxV: jax.Array, top_k: int) -> jax.Array:
  """softmax over the vocabulary, or over the top k logits (renormalised) when top_k > 0."""
  if top_k:
    kth_BxLx1 = jax.lax.top_k(logits_BxLxV, top_k)[0][..., -1:]
    logits_BxLxV = jnp.where(logits_BxLxV >= kth_BxLx1, logits_BxLxV, -jnp.inf)
  return jax.nn.softmax(logits_BxLxV.astype(jnp.float32), axis=-1)


def embed_scale(model: Transformer, ponder: PonderConfig) -> float:
  """sqrt(d) with scale_embeds (E0 and the mixture table), else 1."""
  return math.sqrt(model.cfg.d_model) if ponder.scale_embeds else 1.0


def rematerialized(fn):
  """fn(params, x, aux) -> array, recomputed in the backward pass instead of storing activations.

  `params` (a float pytree) and `x` (the activation) are differentiated; `aux` is a pytree of
  non-differentiable arrays (positions, segment ids). `jax.checkpoint` leaves the recomputation
  free to run as soon as its inputs exist. Inside a `lax.scan` the backward loop holds it back,
  but XLA removes a one-trip loop (s = 1) and then schedules the recomputation next to the last
  pass's forward activations: with it, s = 1 took twice the memory of s = 0 and ran slower than
  without remat (benchmarks/README.md). Here the recomputed `x` depends on the incoming cotangent
  (x + 0 * g[0], which XLA does not fold for floats), so the recomputation waits for it.
  """
  @jax.custom_vjp
  def wrapped(params, x, aux):
    return fn(params, x, aux)

  def fwd(params, x, aux):
    return fn(params, x, aux), (params, x, aux)

  def bwd(residuals, cotangent):
    params, x, aux = residuals
    x = x + jnp.zeros((), x.dtype) * cotangent.reshape(-1)[0].astype(x.dtype)
    d_params, d_x = jax.vjp(lambda p, y: fn(p, y, aux), params, x)[1](cotangent)
    return d_params, d_x, None

  wrapped.defvjp(fwd, bwd)
  return wrapped


def forward(model: Transformer, params, tokens_BxL: jax.Array, positions_BxL=None,
            segment_ids_BxL=None, *, ponder: PonderConfig,
            ponder_steps: int | jax.Array | None = None) -> jax.Array:
  """fp32 logits [B, L, V] of the last pass; `ponder_steps` (s) overrides ponder.steps and may
  be traced."""
  apply = lambda p, *args, method: model.apply({"params": p}, *args, method=method)
  dtype = jnp.dtype(model.cfg.dtype)
  layout = (positions_BxL, segment_ids_BxL)

  def one_pass(p, cur_BxLxD, layout):
    h_BxLxD = apply(p, cur_BxLxD, *layout, method="hidden")
    return apply(p, h_BxLxD, method="logits")

  # E0 is scaled whatever s is, so a fixed s = 0 and an s = 0 drawn under steps_max are one model.
  scale = embed_scale(model, ponder)
  e0_BxLxD = apply(params, tokens_BxL, method="embed") * scale
  s = ponder.steps if ponder_steps is None else ponder_steps
  if ponder.steps_max == 0 and isinstance(s, int) and s == 0:
    return one_pass(params, e0_BxLxD, layout)

  def pass_and_mix(p, cur_BxLxD, layout):
    e_in_VxD = apply(p, method="embedding_table") * scale
    probs_BxLxV = mixture_probs(one_pass(p, cur_BxLxD, layout), ponder.top_k)
    return cur_BxLxD + matmul(probs_BxLxV, e_in_VxD, dtype)

  if ponder.remat:
    pass_and_mix = rematerialized(pass_and_mix)
  ponder_step = lambda cur_BxLxD: pass_and_mix(params, cur_BxLxD, layout)

  cur_BxLxD = jnp.maximum(s, 1) * e0_BxLxD if ponder.multiply_initial else e0_BxLxD
  if ponder.steps_max:  # traced s: run steps_max iterations, skipping those past s
    body = lambda cur, i: (jax.lax.cond(i < s, ponder_step, lambda c: c, cur), None)
    cur_BxLxD, _ = jax.lax.scan(body, cur_BxLxD, jnp.arange(ponder.steps_max))
  else:
    cur_BxLxD, _ = jax.lax.scan(lambda cur, _: (ponder_step(cur), None), cur_BxLxD, None,
                                length=s)
  return one_pass(params, cur_BxLxD, layout)


def sample_steps(ponder: PonderConfig, rng: jax.Array) -> jax.Array | int:
  """s for one batch: fixed, or uniform on {steps, ..., steps_max} when steps_max > 0."""
  if not ponder.steps_max:
    return ponder.steps
  return jax.random.randint(rng, (), ponder.steps, ponder.steps_max + 1)
