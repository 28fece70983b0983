"""Teacher-forced scoring against the training loss and against greedy generation."""

import jax.numpy as jnp
import numpy as np
import pytest

from ponder_jax import loss as loss_lib
from ponder_jax.config import ConfigError, PonderConfig
from ponder_jax.infer import Engine
from ponder_jax.model import ponder
from tests.helpers import init_params, tiny_config

PAD, PAUSE = 0, 3
CONTEXTS = [[5, 17, 33, 8], [22], [60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70]]
CONTINUATIONS = [[41, 9, 12], [7, 7, 7, 7, 7, 7], [71]]


@pytest.mark.parametrize("family, steps, options", [
    ("gpt2", 0, {}), ("neox", 2, dict(scale_embeds=True)), ("llama", 1, dict(top_k=5))])
def test_score_equals_the_training_loss_on_the_same_tokens(family, steps, options):
  model, params = init_params(tiny_config(family), ponder_passes=steps + 1)
  ponder_cfg = PonderConfig(steps=steps, **options)
  engine = Engine(model, params, ponder_cfg, pad_id=PAD)
  scores = engine.score(CONTEXTS, CONTINUATIONS, batch_size=2)
  for context, continuation, got in zip(CONTEXTS, CONTINUATIONS, scores):
    tokens = jnp.asarray([context + continuation], jnp.int32)
    logits = ponder.forward(model, params, tokens, ponder=ponder_cfg)
    for t in range(len(continuation)):  # one target at a time: the loss of that token alone
      mask = np.zeros(tokens.shape, np.int32)
      mask[0, len(context) + t] = 1
      _, sums = loss_lib.cross_entropy(logits, {"tokens": tokens, "loss_mask": mask})
      np.testing.assert_allclose(got.token_logprobs[t], -float(sums["loss"]), atol=1e-5)
    np.testing.assert_allclose(got.logprob, sum(got.token_logprobs), atol=1e-6)
    assert got.context_tokens == len(context)


def test_is_greedy_agrees_with_greedy_generation():
  model, params = init_params(tiny_config("neox"), ponder_passes=2)
  engine = Engine(model, params, PonderConfig(steps=1), pad_id=PAD, pause_id=PAUSE)
  greedy = engine.generate(CONTEXTS, max_new_tokens=5).completions()
  scores = engine.score(CONTEXTS, greedy)
  assert all(s.is_greedy for s in scores)
  np.testing.assert_allclose([s.logprob for s in scores],
                             engine.generate(CONTEXTS, max_new_tokens=5).model_logprobs.sum(1),
                             atol=1e-4)
  altered = [c[:-1] + [(c[-1] + 1) % 97 or 1] for c in greedy]
  assert not any(s.is_greedy for s in engine.score(CONTEXTS, altered))


def test_pauses_and_left_truncation_of_long_contexts():
  model, params = init_params(tiny_config("llama"))  # max_len 64
  engine = Engine(model, params, PonderConfig(), pad_id=PAD, pause_id=PAUSE)
  paused = engine.score(CONTEXTS, CONTINUATIONS, num_pauses=3)
  by_hand = engine.score([c + [PAUSE] * 3 for c in CONTEXTS], CONTINUATIONS)
  np.testing.assert_allclose([s.logprob for s in paused], [s.logprob for s in by_hand],
                             atol=1e-6)
  long_context = list(range(1, 90))
  (cut,) = engine.score([long_context], [[5, 6]])
  (tail,) = engine.score([long_context[-62:]], [[5, 6]])
  assert cut.context_tokens == 62
  np.testing.assert_allclose(cut.token_logprobs, tail.token_logprobs, atol=1e-6)


def test_bad_input_names_the_problem():
  model, params = init_params(tiny_config("neox"))
  engine = Engine(model, params, PonderConfig(), pad_id=PAD)
  with pytest.raises(ConfigError, match=r"continuations\[0\].*empty"):
    engine.score([[1]], [[]])
  with pytest.raises(ConfigError, match="pair up"):
    engine.score([[1], [2]], [[3]])
  with pytest.raises(ConfigError, match=r"continuations\[0\].*max_len = 64"):
    engine.score([[1]], [list(range(1, 80))])
