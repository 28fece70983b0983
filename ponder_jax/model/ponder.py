"""PonderLM's pondering loop (METHODS.md §1.1), as a pure function of the params.

    E0  = embed(x)                      (x sqrt(d) with scale_embeds; x s with multiply_initial)
    cur = E0
    repeat s times (jax.lax.scan):      P = softmax(logits(cur));  cur = cur + P @ E_in
    return logits(cur)                  the loss sees only this last pass

Every position ponders in parallel, so each step is one more full causal forward with the same
weights; gradients flow through every pass and through the softmax mixture. Each scanned step is
rematerialised (`rematerialized`), so the backward keeps only the carried embeddings `cur` per
step plus one pass's activations, and compile time does not grow with s. `ponder.remat_policy`
'vocab' instead keeps the layers' activations and recomputes only the vocabulary-sized part;
the mixture `softmax(h W) E` (`vocab_mixture`) has its own VJP that stores h, not [B, L, V]
logits and probabilities, and runs over blocks of `ponder.vocab_chunk` rows so that no [B, L, V]
buffer exists at all (the CPU default under 'auto': `remat_policy`). With `ponder.steps_max`
the number of steps is a traced value drawn per batch: the scan runs steps_max iterations and
skips those beyond s with `lax.cond`, so a batch costs s + 1 passes, not steps_max + 1.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from ponder_jax.config import PonderConfig
from ponder_jax.model.layers import _dot, _weight_grad, matmul
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


def _row_chunks(x_NxK: jax.Array, chunk: int) -> jax.Array:
  """x [N, K] as [N / c, c, K] (rows zero-padded to a multiple of c)."""
  n = x_NxK.shape[0]
  pad = -n % chunk
  if pad:
    x_NxK = jnp.pad(x_NxK, ((0, pad), (0, 0)))
  return x_NxK.reshape(-1, chunk, x_NxK.shape[-1])


def _mixture_rows(h_NxD, head_DxV, table_VxD, top_k, dtype):
  """softmax(h W) E for one block of rows, with the probabilities: ([N, D], [N, V])."""
  probs_NxV = mixture_probs(_dot(h_NxD, head_DxV, dtype), top_k)
  return _dot(probs_NxV, table_VxD, dtype), probs_NxV


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def vocab_mixture(h_NxD: jax.Array, head_DxV: jax.Array, table_VxD: jax.Array, top_k: int = 0,
                  dtype=jnp.float32, chunk: int = 0) -> jax.Array:
  """T = softmax(h @ head) @ table, fp32 [N, D], that stores no [N, V] array for the backward.

  The backward recomputes the logits and probabilities from h (one head GEMM) instead of
  keeping them: per pass the residuals are h, not the [N, V] logits and probabilities. With
  `chunk` > 0 both directions run over blocks of `chunk` rows (`lax.map` / `lax.scan`), so no
  [N, V] buffer exists at all, only [chunk, V] ones; 0 is one block. The same math as
  `matmul(mixture_probs(matmul(h, head)), table)`: with top_k the probabilities outside the top
  k are 0 and so is their gradient.
  """
  if not chunk or chunk >= h_NxD.shape[0]:
    return _mixture_rows(h_NxD, head_DxV, table_VxD, top_k, dtype)[0]
  rows = lambda h_CxD: _mixture_rows(h_CxD, head_DxV, table_VxD, top_k, dtype)[0]
  t_NxD = jax.lax.map(rows, _row_chunks(h_NxD, chunk)).reshape(-1, table_VxD.shape[-1])
  return t_NxD[:h_NxD.shape[0]]


def _vocab_mixture_fwd(h_NxD, head_DxV, table_VxD, top_k, dtype, chunk):
  return vocab_mixture(h_NxD, head_DxV, table_VxD, top_k, dtype, chunk), (h_NxD, head_DxV,
                                                                           table_VxD)


def _vocab_mixture_bwd(top_k, dtype, chunk, residuals, g_NxD):
  """dP = g E^T, dlogits = P (dP - <P, dP>), dh = dlogits W^T, dW = h^T dlogits, dE = P^T g."""
  h_NxD, head_DxV, table_VxD = residuals
  # Recompute only once the cotangent exists (see `rematerialized`: a one-trip scan is removed
  # and XLA would otherwise run the recomputation in the forward, keeping [N, V] alive).
  h_NxD = h_NxD + jnp.zeros((), h_NxD.dtype) * g_NxD.reshape(-1)[0].astype(h_NxD.dtype)

  def rows(h_CxD, g_CxD):
    _, probs_CxV = _mixture_rows(h_CxD, head_DxV, table_VxD, top_k, dtype)
    d_probs_CxV = _dot(g_CxD, table_VxD.T, dtype)
    d_logits_CxV = probs_CxV * (d_probs_CxV - jnp.sum(probs_CxV * d_probs_CxV, -1, keepdims=True))
    d_h_CxD = _dot(d_logits_CxV, head_DxV.T, dtype)
    return (d_h_CxD, _weight_grad(h_CxD, d_logits_CxV, dtype),
            _weight_grad(probs_CxV, g_CxD, dtype))

  n = h_NxD.shape[0]
  if not chunk or chunk >= n:
    d_h, d_head, d_table = rows(h_NxD, g_NxD)
  else:
    def body(acc, xs):
      d_h_CxD, d_head_DxV, d_table_VxD = rows(*xs)
      return (acc[0] + d_head_DxV, acc[1] + d_table_VxD), d_h_CxD
    zeros = (jnp.zeros(head_DxV.shape, jnp.float32), jnp.zeros(table_VxD.shape, jnp.float32))
    (d_head, d_table), d_h = jax.lax.scan(
        body, zeros, (_row_chunks(h_NxD, chunk), _row_chunks(g_NxD.astype(jnp.float32), chunk)))
    d_h = d_h.reshape(-1, h_NxD.shape[-1])[:n]
  return (d_h.astype(h_NxD.dtype), d_head.astype(head_DxV.dtype),
          d_table.astype(table_VxD.dtype))


vocab_mixture.defvjp(_vocab_mixture_fwd, _vocab_mixture_bwd)


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


def _head(module: Transformer) -> jax.Array:
  """The LM head [D, V] that `Transformer.logits` multiplies by."""
  return module.token_embed.T if module.cfg.tie_embeddings else module.lm_head


# Rows per block of the vocabulary mixture under ponder.remat_policy 'auto' on the CPU: 0.77x the
# s = 3 step's memory of one block, speed within the noise (benchmarks/README.md).
CPU_VOCAB_CHUNK = 1024


def remat_policy(ponder: PonderConfig) -> tuple[str, int]:
  """(policy, vocab_chunk): what a pass recomputes in the backward, 'full', 'vocab' or 'none'
  (ponder.remat off), and the mixture's rows per block (0: all at once).

  'auto' is 'full' everywhere: on the CPU 'vocab' measured no faster and kept 2.1x the memory
  of 'full' (every pass's layer activations); on the CPU it also chunks the mixture
  (`CPU_VOCAB_CHUNK`) unless ponder.vocab_chunk says otherwise. Elsewhere the mixture is one
  block, as `ponder-aot`'s TPU estimates were made."""
  chunk = ponder.vocab_chunk
  if not ponder.remat:
    return "none", chunk
  if ponder.remat_policy == "auto":
    return "full", chunk or (CPU_VOCAB_CHUNK if jax.default_backend() == "cpu" else 0)
  return ponder.remat_policy, chunk


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

  policy, chunk = remat_policy(ponder)

  def pass_and_mix(p, cur_BxLxD, layout):
    e_in_VxD = apply(p, method="embedding_table") * scale
    if policy == "vocab" or chunk:
      h_BxLxD = apply(p, cur_BxLxD, *layout, method="hidden")
      t_NxD = vocab_mixture(h_BxLxD.reshape(-1, h_BxLxD.shape[-1]), apply(p, method=_head),
                            e_in_VxD, ponder.top_k, dtype, chunk)
      return cur_BxLxD + t_NxD.reshape(cur_BxLxD.shape)
    probs_BxLxV = mixture_probs(one_pass(p, cur_BxLxD, layout), ponder.top_k)
    return cur_BxLxD + matmul(probs_BxLxV, e_in_VxD, dtype)

  if policy == "full":
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
