"""The pause-aware, packing-aware next-token loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ponder_jax import loss

PAUSE = 7


def _batch():
  tokens = jnp.array([[1, 2, PAUSE, 3, 4, 5, 6, 0],
                      [PAUSE, PAUSE, 9, 8, PAUSE, 2, 0, 0]], jnp.int32)
  segment_ids = jnp.array([[1, 1, 1, 1, 2, 2, 2, 0],
                           [1, 1, 1, 1, 1, 1, 0, 0]], jnp.int32)
  return {"tokens": tokens, "segment_ids": segment_ids}


def test_target_weights_exclude_pause_padding_and_document_boundaries():
  w = np.asarray(loss.target_weights(_batch(), pause_id=PAUSE))
  # Row 0 targets: 2, P, 3, 4(new doc), 5, 6, pad.
  np.testing.assert_array_equal(w[0], [1, 0, 1, 0, 1, 1, 0])
  # Row 1 targets: P, 9, 8, P, 2, pad, pad. Predictions *from* pauses (positions 1, 4) count.
  np.testing.assert_array_equal(w[1], [0, 1, 1, 0, 1, 0, 0])


def test_loss_ignores_logits_at_pause_targets_and_counts_the_rest():
  batch = _batch()
  logits = jax.random.normal(jax.random.key(0), (2, 8, 11))
  mean, sums = loss.cross_entropy(logits, batch, pause_id=PAUSE)
  w = loss.target_weights(batch, pause_id=PAUSE)
  assert float(sums["tokens"]) == float(w.sum()) == 7.0
  # Logits at positions whose target is a pause (row 0 pos 1, row 1 pos 0 and 3) don't matter.
  perturbed = logits.at[0, 1].add(5.0).at[1, 0].set(-3.0).at[1, 3].mul(4.0)
  np.testing.assert_array_equal(mean, loss.cross_entropy(perturbed, batch, pause_id=PAUSE)[0])
  # ... but every other weighted position does.
  for b, t in zip(*np.nonzero(np.asarray(w))):
    changed = loss.cross_entropy(logits.at[b, t].add(jnp.arange(11.0)), batch, pause_id=PAUSE)[0]
    assert float(changed) != float(mean), (b, t)
  # Without the pause id, pause targets count.
  assert float(loss.cross_entropy(logits, batch)[1]["tokens"]) == 10.0


def test_matches_optax_reference_and_loss_mask():
  tokens = jax.random.randint(jax.random.key(1), (3, 9), 0, 13)
  logits = jax.random.normal(jax.random.key(2), (3, 9, 13))
  loss_mask = jnp.ones((3, 9), jnp.int32).at[:, :5].set(0)
  mean, sums = loss.cross_entropy(logits, {"tokens": tokens, "loss_mask": loss_mask})
  ref = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:])[:, 4:]
  np.testing.assert_allclose(mean, ref.mean(), rtol=1e-6)
  assert float(sums["tokens"]) == 3 * 4
  acc = (jnp.argmax(logits[:, :-1], -1) == tokens[:, 1:])[:, 4:].sum()
  assert float(sums["correct"]) == float(acc)


def test_z_loss_adds_squared_log_partition():
  tokens = jax.random.randint(jax.random.key(3), (2, 6), 0, 5)
  logits = jax.random.normal(jax.random.key(4), (2, 6, 5)) + 3.0
  plain, _ = loss.cross_entropy(logits, {"tokens": tokens})
  with_z, _ = loss.cross_entropy(logits, {"tokens": tokens}, z_loss=1e-2)
  log_z = jax.nn.logsumexp(logits[:, :-1], axis=-1)
  np.testing.assert_allclose(with_z - plain, 1e-2 * jnp.mean(log_z ** 2), rtol=1e-5)


def test_per_source_sums_partition_the_total():
  batch = _batch()
  batch["source_id"] = jnp.array([[0, 0, 0, 0, 1, 1, 1, -1],
                                  [2, 2, 2, 2, 2, 2, -1, -1]], jnp.int32)
  logits = jax.random.normal(jax.random.key(5), (2, 8, 11))
  _, sums = loss.cross_entropy(logits, batch, pause_id=PAUSE, num_sources=3)
  np.testing.assert_array_equal(sums["source_tokens"], [2, 2, 3])
  np.testing.assert_allclose(sums["source_loss"].sum(), sums["loss"], rtol=1e-6)
