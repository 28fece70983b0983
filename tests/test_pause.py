"""Pause transforms: insertion keeps every token of a document (no trimming), the pause fraction
and uniform positions, field alignment, the PauseFT layout, and that no pause is ever a weighted
target."""

import numpy as np
import pytest

from ponder_jax.data import pause
from ponder_jax.loss import target_weights

PAUSE = 4


def _example(n, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(10, 500, n).astype(np.int32)
  return {"tokens": tokens, "loss_mask": (rng.random(n) < 0.7).astype(np.int32),
          "source_id": np.full(n, 3, np.int32)}


def _strip(out):
  """The real tokens of a transformed example (pauses removed), per field."""
  real = out["tokens"] != PAUSE
  return {key: value[real] for key, value in out.items()}


def test_every_document_keeps_all_its_tokens_in_order_and_its_ends():
  """Nothing is trimmed: over many random documents, removing the pauses gives the document
  back, field by field; it still starts with its first token (bos) and ends with its last
  (eos); and every pause is a non-target carrying the source id of its document."""
  rng = np.random.default_rng(0)
  grown = 0
  for seed in range(2000):
    n = int(rng.integers(2, 300))
    ex = _example(n, seed)
    ex["tokens"][0], ex["tokens"][-1] = 1, 2  # bos ... eos
    out = pause.insert_pauses(ex, ratio=0.1, pause_id=PAUSE, rng=np.random.default_rng(seed))
    assert {k: v.shape[0] for k, v in out.items()} == dict.fromkeys(ex, out["tokens"].size)
    for key, value in _strip(out).items():
      np.testing.assert_array_equal(value, ex[key])
    assert out["tokens"][0] == 1 and out["tokens"][-1] == 2
    is_pause = out["tokens"] == PAUSE
    assert not out["loss_mask"][is_pause].any() and (out["source_id"] == 3).all()
    grown += is_pause.sum()
  assert grown > 0


def test_pause_fraction_and_uniform_positions():
  n, ratio, draws = 100, 0.2, 2000
  # M = 0.2 * 100 / 0.8 = 25 pauses exactly: 25 of 125 slots, a fraction of 0.2.
  assert pause.expected_pauses(n, ratio) == 25
  position_hist = np.zeros(n + 25)
  for seed in range(draws):
    out = pause.insert_pauses(_example(n), ratio=ratio, pause_id=PAUSE,
                              rng=np.random.default_rng(seed))
    is_pause = out["tokens"] == PAUSE
    assert is_pause.size == 125 and is_pause.sum() == 25
    position_hist += is_pause
  # Uniform over the 123 slots between the first and the last token.
  assert position_hist[0] == position_hist[-1] == 0
  expected = draws * 25 / 123
  assert np.abs(position_hist[1:-1] - expected).max() < 5 * np.sqrt(expected)


def test_pause_count_is_unbiased_for_short_documents():
  """M = ratio * N / (1 - ratio) rounded at random: a 20-token document at ratio 0.1 gets 2 or 3
  pauses, 2.22 on average, so pauses are a tenth of its grown length on average."""
  counts = [pause.num_pauses(20, 0.1, np.random.default_rng(seed)) for seed in range(4000)]
  assert set(counts) == {2, 3}
  assert abs(np.mean(counts) - 20 / 9) < 0.03
  assert abs(np.sum(counts) / (20 * len(counts) + np.sum(counts)) - 0.1) < 0.002
  assert pause.num_pauses(1000, 0.0, np.random.default_rng(0)) == 0


def test_seeded_and_ratio_zero():
  ex = _example(64)
  a = pause.insert_pauses(ex, ratio=0.2, pause_id=PAUSE, rng=np.random.default_rng(7))
  b = pause.insert_pauses(ex, ratio=0.2, pause_id=PAUSE, rng=np.random.default_rng(7))
  c = pause.insert_pauses(ex, ratio=0.2, pause_id=PAUSE, rng=np.random.default_rng(8))
  np.testing.assert_array_equal(a["tokens"], b["tokens"])
  assert not np.array_equal(a["tokens"], c["tokens"])
  same = pause.insert_pauses(ex, ratio=0.0, pause_id=PAUSE, rng=np.random.default_rng(7))
  np.testing.assert_array_equal(same["tokens"], ex["tokens"])
  with pytest.raises(ValueError, match="ratio"):
    pause.insert_pauses(ex, ratio=1.0, pause_id=PAUSE, rng=np.random.default_rng(0))


def test_no_pause_target_is_weighted():
  # Ratio 0.2 of 128 tokens: 32 pauses exactly, so the rows stack.
  rows = [pause.insert_pauses(_example(128, seed), ratio=0.2, pause_id=PAUSE,
                              rng=np.random.default_rng(seed)) for seed in range(16)]
  batch = {k: np.stack([r[k] for r in rows]) for k in ("tokens", "loss_mask")}
  pause_target = batch["tokens"][:, 1:] == PAUSE
  assert pause_target.sum() > 100
  # Even without telling the loss the pause id, the loss mask already drops pause targets.
  for pause_id in (None, PAUSE):
    weights = np.asarray(target_weights(batch, pause_id))
    assert not weights[pause_target].any()
  # Predictions made *from* a pause are trained.
  from_pause = (batch["tokens"][:, :-1] == PAUSE) & ~pause_target & (batch["loss_mask"][:, 1:] > 0)
  assert np.asarray(target_weights(batch, PAUSE))[from_pause].all()


def test_finetune_layout_and_inference_prompt():
  ex = pause.pause_finetune_example([1, 20, 21, 22], [30, 31, 2], num_pauses=3, pause_id=PAUSE)
  np.testing.assert_array_equal(ex["tokens"], [1, 20, 21, 22, 4, 4, 4, 30, 31, 2])
  np.testing.assert_array_equal(ex["loss_mask"], [0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
  batch = {k: v[None] for k, v in ex.items()}
  weights = np.asarray(target_weights(batch, PAUSE))[0]
  # Exactly the three target tokens are predicted, the first from the last pause.
  np.testing.assert_array_equal(np.flatnonzero(weights), [6, 7, 8])
  np.testing.assert_array_equal(pause.append_pauses([1, 20], num_pauses=2, pause_id=PAUSE),
                                [1, 20, 4, 4])
  with pytest.raises(ValueError):
    pause.pause_finetune_example([1], [2], num_pauses=-1, pause_id=PAUSE)
