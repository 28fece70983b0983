"""Batched generation for pondering models: prefill, then a jitted `lax.while_loop` decode.

    prompts (different lengths, + M_inf pauses) -> left-padded [B, P] -> prefill: every pass
    over the prompt fills its KV cache (cache.py) -> while not done: sample the next token from
    the last logits, write it, run the s + 1 passes on it over the caches (donated) -> tokens

Sampling: greedy (temperature 0), or temperature with top-k and top-p (nucleus) filtering,
seeded. `<pause>` and ids outside the tokenizer's vocabulary are never sampled. For every
generated token two log-probs come back: under the distribution it was drawn from (after
temperature and filtering; 0 for greedy, a point mass), which is BoLT's log q, and under the
model at temperature 1 without filtering. With a mesh, params and caches carry the trainer's
logical shardings (batch over data/fsdp, kv heads over tensor).

Pause inference (METHODS.md §2.1): `num_pauses` pauses are appended to every prompt
(`data.pause.append_pauses`); decoding starts after the last one, so the outputs at the pauses
are never read.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ponder_jax.config import ConfigError, PonderConfig
from ponder_jax.infer.cache import KVCache, extend
from ponder_jax.model.transformer import Transformer

if TYPE_CHECKING:
  from ponder_jax.infer.engine import Engine

PROMPT_BUCKET = 16  # prompt lengths round up to this, so similar batches share one compile


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """temperature 0 is greedy; top_k 0 and top_p 1 switch their filter off."""
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0

  def validated(self, vocab_size: int) -> "SamplingConfig":
    if not (isinstance(self.temperature, (int, float)) and self.temperature >= 0):
      raise ConfigError("temperature", self.temperature, "must be >= 0 (0 is greedy)")
    if not (isinstance(self.top_k, int) and 0 <= self.top_k <= vocab_size):
      raise ConfigError("top_k", self.top_k, f"must be an integer in [0, {vocab_size}]")
    if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
      raise ConfigError("top_p", self.top_p, "must lie in (0, 1]")
    return self

  @property
  def greedy(self) -> bool:
    return self.temperature == 0


def sampling_logits(logits_BxV: jax.Array, sampling: SamplingConfig,
                    allowed_V: jax.Array) -> jax.Array:
  """The logits of the distribution a token is drawn from: disallowed ids, and ids outside the
  top-k / top-p set, at -inf; divided by the temperature (unless greedy)."""
  logits_BxV = jnp.where(allowed_V, logits_BxV.astype(jnp.float32), -jnp.inf)
  if sampling.greedy:
    return logits_BxV
  logits_BxV = logits_BxV / sampling.temperature
  if sampling.top_k:
    kth_Bx1 = jax.lax.top_k(logits_BxV, sampling.top_k)[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV >= kth_Bx1, logits_BxV, -jnp.inf)
  if sampling.top_p < 1:
    sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
    probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
    mass_before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV
    # The smallest set whose mass reaches top_p: every token with less mass before it.
    kept_BxV = mass_before_BxV < sampling.top_p
    threshold_Bx1 = jnp.min(jnp.where(kept_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
    logits_BxV = jnp.where(logits_BxV >= threshold_Bx1, logits_BxV, -jnp.inf)
  return logits_BxV


def sample(rng: jax.Array, logits_BxV: jax.Array, sampling: SamplingConfig,
           allowed_V: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(token [B], log-prob under the sampling distribution [B], under the model at T = 1 [B])."""
  filtered_BxV = sampling_logits(logits_BxV, sampling, allowed_V)
  if sampling.greedy:
    token_B = jnp.argmax(filtered_BxV, axis=-1).astype(jnp.int32)
    logq_B = jnp.zeros(token_B.shape, jnp.float32)
  else:
    token_B = jax.random.categorical(rng, filtered_BxV, axis=-1).astype(jnp.int32)
    logq_B = _log_prob(filtered_BxV, token_B)
  return token_B, logq_B, _log_prob(logits_BxV.astype(jnp.float32), token_B)


def _log_prob(logits_BxV: jax.Array, token_B: jax.Array) -> jax.Array:
  log_probs_BxV = jax.nn.log_softmax(logits_BxV, axis=-1)
  return jnp.take_along_axis(log_probs_BxV, token_B[:, None], axis=-1)[:, 0]


@dataclasses.dataclass
class Generation:
  """What `generate` returns, one row per prompt (numpy arrays, N = max_new_tokens).

  tokens        [B, N] generated ids; after a row stops, pad ids
  lengths       [B] generated tokens per row, the stop token included
  logprobs      [B, N] log-prob of each token under the sampling distribution (0 past the end)
  model_logprobs[B, N] log-prob under the model at temperature 1 (0 past the end)
  prompts       the prompts as fed, pauses included
  logits        [B, N, V] the model's logits at each generated position (return_logits only)
  """
  prompts: list[list[int]]
  tokens: np.ndarray
  lengths: np.ndarray
  logprobs: np.ndarray
  model_logprobs: np.ndarray
  logits: np.ndarray | None = None

  def completions(self) -> list[list[int]]:
    """Each row's generated ids up to and including its stop token."""
    return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths)]


def prefill(model: Transformer, ponder: PonderConfig, ponder_steps: int, params: Any,
            tokens_BxP: jax.Array, offsets_B: jax.Array, *, max_len: int):
  """Runs every pass over the left-padded prompts: (last-position logits [B, V], full cache)."""
  cache = KVCache.empty(model, passes=ponder_steps + 1, offsets_B=offsets_B, max_len=max_len)
  logits_BxPxV, cache = extend(model, params, cache, tokens_BxP, ponder=ponder,
                               ponder_steps=ponder_steps)
  return logits_BxPxV[:, -1], cache


def decode(model: Transformer, ponder: PonderConfig, ponder_steps: int, allowed_V: jax.Array,
           pad_id: int, params: Any, cache: KVCache, logits_BxV: jax.Array,
           stop_ids_S: jax.Array, rng: jax.Array, *, max_new_tokens: int,
           sampling: SamplingConfig, return_logits: bool):
  """The decode loop: sample from `logits_BxV`, feed the token, repeat until every row has met a
  stop id or `max_new_tokens` are out. Returns (outputs, cache)."""
  batch, vocab = logits_BxV.shape
  n = max_new_tokens
  record = lambda buf, i, x: jax.lax.dynamic_update_index_in_dim(buf, x, i, axis=1)

  def body(state):
    i, cache, logits_BxV, done_B, out = state
    token_B, logq_B, logp_B = sample(jax.random.fold_in(rng, i), logits_BxV, sampling, allowed_V)
    token_B = jnp.where(done_B, pad_id, token_B)
    out = {"tokens": record(out["tokens"], i, token_B),
           "logprobs": record(out["logprobs"], i, jnp.where(done_B, 0.0, logq_B)),
           "model_logprobs": record(out["model_logprobs"], i, jnp.where(done_B, 0.0, logp_B)),
           "lengths": out["lengths"] + (~done_B).astype(jnp.int32),
           **({"logits": record(out["logits"], i, logits_BxV)} if return_logits else {})}
    done_B = done_B | jnp.isin(token_B, stop_ids_S)
    next_logits_Bx1xV, cache = extend(model, params, cache, token_B[:, None], ponder=ponder,
                                      ponder_steps=ponder_steps)
    return i + 1, cache, next_logits_Bx1xV[:, 0], done_B, out

  def cond(state):
    i, _, _, done_B, _ = state
    return (i < n) & ~jnp.all(done_B)

  out = {"tokens": jnp.full((batch, n), pad_id, jnp.int32),
         "logprobs": jnp.zeros((batch, n), jnp.float32),
         "model_logprobs": jnp.zeros((batch, n), jnp.float32),
         "lengths": jnp.zeros((batch,), jnp.int32)}
  if return_logits:
    out["logits"] = jnp.zeros((batch, n, vocab), jnp.float32)
  done_B = jnp.zeros((batch,), jnp.bool_)
  state = (jnp.zeros((), jnp.int32), cache, logits_BxV, done_B, out)
  _, cache, _, _, out = jax.lax.while_loop(cond, body, state)
  return out, cache  # returning the cache lets the loop update the donated buffers in place


def generate(engine: "Engine", prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
             stop_tokens: Sequence[int] = (), sampling: SamplingConfig = SamplingConfig(),
             seed: int = 0, num_pauses: int = 0, return_logits: bool = False) -> Generation:
  """Continues every prompt (lists of token ids) by up to `max_new_tokens` tokens, stopping a
  row at any of `stop_tokens`. See the module docstring for sampling and pauses."""
  cfg = engine.model.cfg
  sampling = sampling.validated(cfg.vocab_size)
  prompts = engine.prepare_prompts(prompts, num_pauses, reserve=1)
  if not (isinstance(max_new_tokens, int) and max_new_tokens > 0):
    raise ConfigError("max_new_tokens", max_new_tokens, "must be a positive integer")
  longest = max(len(p) for p in prompts)
  if longest + max_new_tokens > cfg.max_len:
    raise ConfigError("max_new_tokens", max_new_tokens,
                      f"a prompt of {longest} tokens plus {max_new_tokens} new tokens exceeds "
                      f"model.max_len = {cfg.max_len}")
  # Left padding: every row's last prompt token sits in the same slot.
  width = min(-(-longest // PROMPT_BUCKET) * PROMPT_BUCKET, cfg.max_len - max_new_tokens)
  rows = engine.pad_rows(prompts)
  tokens_BxP = np.full((len(rows), width), engine.pad_id, np.int32)
  offsets_B = np.asarray([width - len(p) for p in rows], np.int32)
  for row, (prompt, offset) in enumerate(zip(rows, offsets_B)):
    tokens_BxP[row, offset:] = prompt
  stop_ids_S = jnp.asarray(list(stop_tokens) or [-1], jnp.int32)
  statics = (engine.model, engine.ponder, engine.ponder_steps)
  prefill_fn = engine.jitted("prefill", functools.partial(prefill, *statics),
                             static_argnames=("max_len",))
  decode_fn = engine.jitted(
      "decode", functools.partial(decode, *statics, engine.allowed_V, engine.pad_id),
      donate_argnames=("cache",),
      static_argnames=("max_new_tokens", "sampling", "return_logits"))
  with engine.context():
    logits_BxV, cache = prefill_fn(engine.params, engine.place(tokens_BxP),
                                   engine.place(offsets_B), max_len=width + max_new_tokens)
    out, _ = decode_fn(engine.params, cache, logits_BxV, stop_ids_S, jax.random.key(seed),
                       max_new_tokens=max_new_tokens, sampling=sampling,
                       return_logits=return_logits)
  out = {k: np.asarray(v)[:len(prompts)] for k, v in out.items()}
  return Generation(prompts=prompts, **out)
