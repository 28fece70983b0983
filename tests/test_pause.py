"""Pause transforms: insertion ratio and uniformity, trimming, field alignment, PauseFT layout, and
that no pause is ever a weighted target."""

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


def test_insert_keeps_length_order_and_first_token():
  ex = _example(200)
  out = pause.insert_pauses(ex, ratio=0.1, pause_id=PAUSE, rng=np.random.default_rng(1))
  assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in ex.items()}
  is_pause = out["tokens"] == PAUSE
  assert 0 < is_pause.sum() <= pause.num_pauses(200, 0.1) == 20
  assert out["tokens"][0] == ex["tokens"][0]
  real = out["tokens"][~is_pause]
  # The real tokens are the original prefix, in order: trimming drops only the tail.
  np.testing.assert_array_equal(real, ex["tokens"][:real.size])
  np.testing.assert_array_equal(out["loss_mask"][~is_pause], ex["loss_mask"][:real.size])
  assert not out["loss_mask"][is_pause].any()
  assert (out["source_id"] == 3).all()


def test_ratio_and_uniform_positions():
  n, ratio, draws = 100, 0.25, 2000
  counts, position_hist = [], np.zeros(n)
  for seed in range(draws):
    out = pause.insert_pauses(_example(n), ratio=ratio, pause_id=PAUSE,
                              rng=np.random.default_rng(seed))
    is_pause = out["tokens"] == PAUSE
    counts.append(is_pause.sum())
    position_hist += is_pause
  # M = 25 pauses among N + M = 125 slots of which 99 (slot 0 excluded) can hold one; the first
  # 100 slots are kept, so E[pauses kept] = 25 * 99 / 124.
  assert abs(np.mean(counts) - 25 * 99 / 124) < 0.3
  assert position_hist[0] == 0
  expected = draws * 25 / 124
  assert np.abs(position_hist[1:] - expected).max() < 5 * np.sqrt(expected)


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
  rows = [pause.insert_pauses(_example(128, seed), ratio=0.3, pause_id=PAUSE,
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
