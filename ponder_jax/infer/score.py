"""Teacher-forced scoring of continuations given contexts: the log-likelihood of each
continuation token, their sum, and whether greedy decoding would have produced them.

It is the building block of multiple-choice evaluation (lm-evaluation-harness's
`loglikelihood`) and of BoLT's log p(Z, X | prefix). Every pair runs as one packed row
`context + continuation` through the full pondering forward (`ponder.forward`, s passes), so a
score is exactly the training loss's per-token log-likelihood of the same tokens. Contexts longer
than the model allows are cut from the left, as lm-evaluation-harness does; `num_pauses` pauses
are appended to every context (pause inference).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ponder_jax.config import ConfigError, PonderConfig
from ponder_jax.model import ponder as ponder_lib
from ponder_jax.model.transformer import Transformer

if TYPE_CHECKING:
  from ponder_jax.infer.engine import Engine

ROW_BUCKET = 16  # row widths round up to this, so batches of similar length share a compile


@dataclasses.dataclass
class Score:
  """One continuation's score: `logprob` = sum of `token_logprobs`; `is_greedy` when every
  token is the argmax of the model's next-token logits (`<pause>` never being one)."""
  logprob: float
  token_logprobs: list[float]
  is_greedy: bool
  context_tokens: int  # context tokens the model saw (after left truncation, pauses included)


def token_scores(model: Transformer, ponder: PonderConfig, ponder_steps: int,
                 allowed_V: jax.Array, params: Any, tokens_BxL: jax.Array,
                 segment_ids_BxL: jax.Array):
  """(log p(token t | tokens < t) [B, L], token t is the greedy choice [B, L]); column 0 is 0."""
  logits_BxLxV = ponder_lib.forward(model, params, tokens_BxL, None, segment_ids_BxL,
                                    ponder=ponder, ponder_steps=ponder_steps)[:, :-1]
  targets_BxT = tokens_BxL[:, 1:]
  log_probs_BxTxV = jax.nn.log_softmax(logits_BxLxV, axis=-1)
  logp_BxT = jnp.take_along_axis(log_probs_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
  greedy_BxT = jnp.argmax(jnp.where(allowed_V, logits_BxLxV, -jnp.inf), -1) == targets_BxT
  pad = lambda x: jnp.pad(x, ((0, 0), (1, 0)))
  return pad(logp_BxT), pad(greedy_BxT)


def score(engine: "Engine", contexts: Sequence[Sequence[int]],
          continuations: Sequence[Sequence[int]], *, num_pauses: int = 0,
          batch_size: int = 16) -> list[Score]:
  """Scores continuation i given context i (token-id lists), in input order."""
  if len(contexts) != len(continuations):
    raise ConfigError("continuations", f"{len(continuations)} continuations",
                      f"must pair up with the {len(contexts)} contexts")
  if not (isinstance(batch_size, int) and batch_size > 0):
    raise ConfigError("batch_size", batch_size, "must be a positive integer")
  contexts = engine.prepare_prompts(contexts, num_pauses, reserve=None, key="contexts")
  continuations = engine.prepare_prompts(continuations, reserve=1, key="continuations")
  max_len = engine.model.cfg.max_len
  rows = []
  for context, continuation in zip(contexts, continuations):
    context = context[max(0, len(context) + len(continuation) - max_len):]
    rows.append((context, continuation))
  fn = engine.jitted("score", functools.partial(
      token_scores, engine.model, engine.ponder, engine.ponder_steps, engine.allowed_V))
  order = sorted(range(len(rows)), key=lambda i: -sum(map(len, rows[i])))
  results: list[Score | None] = [None] * len(rows)
  for start in range(0, len(order), batch_size):
    chunk = order[start:start + batch_size]
    longest = max(sum(map(len, rows[i])) for i in chunk)
    width = min(-(-longest // ROW_BUCKET) * ROW_BUCKET, max_len)
    batch_rows = engine.pad_rows([rows[i] for i in chunk] + [rows[chunk[0]]] * (
        batch_size - len(chunk)))
    tokens_BxL = np.full((len(batch_rows), width), engine.pad_id, np.int32)
    segment_ids_BxL = np.zeros_like(tokens_BxL)
    for r, (context, continuation) in enumerate(batch_rows):
      n = len(context) + len(continuation)
      tokens_BxL[r, :n] = context + continuation
      segment_ids_BxL[r, :n] = 1
    with engine.context():
      logp_BxL, greedy_BxL = fn(engine.params, engine.place(tokens_BxL),
                                engine.place(segment_ids_BxL))
    logp_BxL, greedy_BxL = np.asarray(logp_BxL), np.asarray(greedy_BxL)
    for r, i in enumerate(chunk):
      context, continuation = rows[i]
      span = slice(len(context), len(context) + len(continuation))
      results[i] = Score(logprob=float(logp_BxL[r, span].sum(dtype=np.float64)),
                         token_logprobs=logp_BxL[r, span].tolist(),
                         is_greedy=bool(greedy_BxL[r, span].all()),
                         context_tokens=len(context))
  return results
