"""BoLT's E-step against a direct computation, its resampling against softmax(log w), resumable
shards, and its records read back by the pipeline."""

import glob
import json
import math
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ponder_jax.bolt import estep
from ponder_jax.config import ConfigError, PonderConfig
from ponder_jax.data import pipeline, sources
from ponder_jax.data.vocab import load_vocabulary
from ponder_jax.infer import Engine
from ponder_jax.model import ponder
from tests.helpers import init_params, tiny_config

VOCAB = load_vocabulary("byte")
DOCS = [
    estep.LatentDocument("m0", ("12*3=", "36"), (False, True)),
    estep.LatentDocument("m1", ("Solve 2x+1=7.", " x=3"), (False, True)),
    estep.LatentDocument("t2", ("First words. ", "Then more. ", "The end."), (True, True, True)),
    estep.LatentDocument(7, ("40+2=", "42"), (False, True)),
    estep.LatentDocument("m4", ("9-4=", "5"), (False, True)),
]


@pytest.fixture(scope="module")
def teacher():
  """A tiny pondering model whose head favours <EoL>, so that about half the samples close."""
  cfg = tiny_config("neox", vocab_size=VOCAB.vocab_size, max_len=96)
  model, params = init_params(cfg, ponder_passes=2)
  # LayerNorm output has zero mean, so with the final bias at 1 a constant <EoL> column adds
  # exactly 4 to the <EoL> logit: P(<EoL>) ~ 0.1 per token.
  params["final_norm"]["bias"] = jnp.ones_like(params["final_norm"]["bias"])
  params["lm_head"] = params["lm_head"].at[:, VOCAB.eol_id].set(4.0 / cfg.d_model)
  return model, params, PonderConfig(steps=1, scale_embeds=True)


def _engine(teacher):
  model, params, ponder_cfg = teacher
  return Engine(model, params, ponder_cfg, pad_id=VOCAB.pad_id, pause_id=VOCAB.pause_id)


def _sum_logprobs(teacher, context, continuation, banned=()):
  """log p(continuation | context) by one full pondering forward, outside the E-step's code;
  `banned` ids have probability 0 (the sampler never draws <pause>)."""
  model, params, ponder_cfg = teacher
  tokens = jnp.asarray([context + continuation], jnp.int32)
  logits = np.asarray(ponder.forward(model, params, tokens, ponder=ponder_cfg)[0], np.float64)
  logits[:, list(banned)] = -np.inf
  log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
  return sum(log_probs[len(context) - 1 + i, tok] for i, tok in enumerate(continuation))


def test_importance_weights_and_elbo_equal_a_direct_computation(teacher):
  cfg = estep.EStepConfig(num_samples=4, max_thought_tokens=6, batch_size=8)
  results, counts = estep.infer_thoughts(_engine(teacher), VOCAB, DOCS, cfg)
  v, closed_total, unclosed_total = VOCAB, 0, 0
  for doc, chunks in zip(DOCS, results):
    encoded = [v.encode(t) for t in doc.chunks]
    for t, result in enumerate(chunks):
      if not doc.infer[t]:
        assert result is None
        continue
      prefix = [tok for chunk in encoded[max(0, t - 3):t] for tok in chunk]
      prompt = [v.bos_id, *prefix, v.sol_id, v.eol_id, *encoded[t], v.sol_id, v.posterior_id]
      want = []
      for sample in result.samples:
        if sample[-1:] != [v.eol_id]:
          want.append(-math.inf)
          unclosed_total += 1
          continue
        closed_total += 1
        log_q = _sum_logprobs(teacher, prompt, sample, banned=[v.pause_id])
        log_p = _sum_logprobs(teacher, [v.bos_id, *prefix],
                              [v.sol_id, v.prior_id, *sample, *encoded[t]])
        want.append(log_p - log_q)
      np.testing.assert_allclose(result.log_w, want, atol=1e-3)
      finite = [w for w in want if math.isfinite(w)]
      want_elbo = (np.logaddexp.reduce(finite) - math.log(4)) if finite else -math.inf
      np.testing.assert_allclose(result.elbo, want_elbo, atol=1e-3)
      if finite:
        assert result.thought_ids + [v.eol_id] in result.samples
        assert result.thought == v.decode(result.thought_ids)
      else:
        assert result.thought is None
  assert closed_total > 0 and unclosed_total > 0  # both paths exercised
  assert counts["closed"] == closed_total and counts["samples"] == closed_total + unclosed_total


def test_one_sample_keeps_its_sample(teacher):
  cfg = estep.EStepConfig(num_samples=1, max_thought_tokens=6)
  results, _ = estep.infer_thoughts(_engine(teacher), VOCAB, DOCS, cfg)
  for chunks in results:
    for result in chunks:
      if result is not None:
        (sample,) = result.samples
        closed = sample[-1:] == [VOCAB.eol_id]
        assert result.thought_ids == (sample[:-1] if closed else None)


def test_resampling_follows_softmax_of_the_log_weights():
  log_w = [0.0, math.log(2.0), -math.inf, math.log(3.0)]
  cfg = estep.EStepConfig(num_samples=4)
  picks = [estep._choose(log_w, cfg, f"doc{i}", 1) for i in range(6000)]  # pylint: disable=protected-access
  counts = np.bincount(picks, minlength=4)
  assert counts[2] == 0
  assert stats.chisquare(counts[[0, 1, 3]], np.array([1, 2, 3]) / 6 * 6000).pvalue > 1e-3
  uniform = estep.EStepConfig(num_samples=4, importance=False)
  picks = [estep._choose(log_w, uniform, f"doc{i}", 1) for i in range(6000)]  # pylint: disable=protected-access
  counts = np.bincount(picks, minlength=4)
  assert counts[2] == 0 and stats.chisquare(counts[[0, 1, 3]]).pvalue > 1e-3
  assert estep._choose([-math.inf] * 3, cfg, "d", 0) is None  # pylint: disable=protected-access


def test_an_interrupted_estep_resumes_to_byte_identical_shards(teacher, tmp_path, monkeypatch):
  cfg = estep.EStepConfig(num_samples=2, max_thought_tokens=6, docs_per_shard=2)
  whole = tmp_path / "whole"
  summary = estep.run_estep(_engine(teacher), VOCAB, DOCS, str(whole), cfg, progress=False)
  assert summary["docs"] == len(DOCS) and len(glob.glob(str(whole / "shard-*.jsonl"))) == 3
  resumed = tmp_path / "resumed"
  write = estep._write_shard  # pylint: disable=protected-access
  calls = []

  def killed_after_one(*args):
    if calls:
      raise KeyboardInterrupt("killed")
    calls.append(1)
    write(*args)

  monkeypatch.setattr(estep, "_write_shard", killed_after_one)
  with pytest.raises(KeyboardInterrupt):
    estep.run_estep(_engine(teacher), VOCAB, DOCS, str(resumed), cfg, progress=False)
  assert len(glob.glob(str(resumed / "shard-*.jsonl"))) == 1
  monkeypatch.setattr(estep, "_write_shard", write)
  assert estep.run_estep(_engine(teacher), VOCAB, DOCS, str(resumed), cfg,
                         progress=False) == summary
  names = sorted(os.listdir(whole))
  assert names == sorted(os.listdir(resumed))
  for name in names:
    assert (whole / name).read_bytes() == (resumed / name).read_bytes(), name


def test_records_read_by_the_pipeline_give_the_thought_layout(teacher, tmp_path):
  cfg = estep.EStepConfig(num_samples=3, max_thought_tokens=6, docs_per_shard=2)
  out = tmp_path / "estep"
  estep.run_estep(_engine(teacher), VOCAB, DOCS, str(out), cfg, progress=False)
  results, _ = estep.infer_thoughts(_engine(teacher), VOCAB, DOCS[:2], cfg,
                                    batch_seed=(cfg.seed, 0))
  data = pipeline.default_data_config()
  data.vocab = "byte"
  data.sources = {"latent": sources.source_config(
      "thoughts", path=str(out / "shard-*.jsonl"), prior_prob=1.0, eval_fraction=0.0)}
  data.phases = {"main": pipeline.phase_config(0, latent=1.0)}
  examples = {}
  stream = iter(pipeline.source_stream(data, VOCAB, "latent"))
  while len(examples) < len(DOCS):
    example = next(stream)
    examples.setdefault(int(example["doc_index"]), example)
  v = VOCAB
  by_tokens = {tuple(e["tokens"].tolist()) for e in examples.values()}
  for doc, chunks in zip(DOCS[:2], results):
    want = [v.bos_id]
    for text, result in zip(doc.chunks, chunks):
      if result is not None and result.thought_ids is not None:
        assert result.thought_ids + [v.eol_id] in result.samples
        want += [v.sol_id, v.prior_id, *result.thought_ids, v.eol_id]  # the sampled ids
      want += v.encode(text)
    want.append(v.eos_id)
    assert tuple(want) in by_tokens


def test_bad_input_is_named(teacher, tmp_path):
  engine = _engine(teacher)
  with pytest.raises(ConfigError, match="bolt.estep.num_samples"):
    estep.run_estep(engine, VOCAB, DOCS, str(tmp_path), estep.EStepConfig(num_samples=0))
  with pytest.raises(ConfigError, match="bolt.corpus.*no documents"):
    estep.run_estep(engine, VOCAB, [], str(tmp_path), estep.EStepConfig())
  small_cfg = tiny_config("neox", vocab_size=5)  # ends before <SoL> (id 5)
  small_model, small_params = init_params(small_cfg)
  small = Engine(small_model, small_params, PonderConfig(), pad_id=0)
  with pytest.raises(ConfigError, match="lacks the thought tokens"):
    estep.run_estep(small, VOCAB, DOCS, str(tmp_path), estep.EStepConfig())
  shutil.rmtree(tmp_path)


def _tiny_bolt_config():
  from ponder_jax.sweep import load_config  # pylint: disable=import-outside-toplevel
  config = load_config(os.path.join(os.path.dirname(__file__), "..", "configs",
                                    "bolt_synthetic.py"))
  config.model.update(d_model=32, n_layers=1, n_heads=2, max_len=96)
  config.data.seq_len = 64
  config.train.update(global_batch_size=8, log_every=1, eval_batches=1)
  config.optim.warmup_steps = 1
  config.checkpoint.update(every=0, async_save=False)
  config.metrics.progress_bar = False
  config.bolt.update(iterations=1, warmstart_problems=16, warmstart_steps=2, corpus_problems=6,
                     mstep_steps=2, eval_items=4)
  config.bolt.estep.update(num_samples=2, max_thought_tokens=8, docs_per_shard=4, batch_size=8)
  return config


def test_em_driver_runs_every_stage_and_resumes(tmp_path):
  from ponder_jax.bolt import em  # pylint: disable=import-outside-toplevel
  config = _tiny_bolt_config()
  rows = em.run(config, str(tmp_path), progress=False)
  assert [row["stage"] for row in rows] == ["warm start", "raw baseline", "EM iteration 1"]
  for row in rows:
    assert 0.0 <= row["accuracy_direct"] <= 1.0 and 0.0 <= row["accuracy_thought"] <= 1.0
  assert 0.0 <= rows[-1]["close_rate"] <= 1.0
  assert len(glob.glob(str(tmp_path / "iter_1" / "estep" / "shard-*.jsonl"))) == 2
  for name in ("summary.json", "summary.md", "summary.png"):
    assert (tmp_path / name).exists()
  # The M-step trained on the E-step's shards: its stored config names them.
  stored = json.loads((tmp_path / "iter_1" / "mstep" / "checkpoints" / "2" / "config" /
                       "metadata").read_text())
  assert stored["data"]["sources"]["latent"]["path"].endswith("estep/shard-*.jsonl")
  # Run again: every stage is done, nothing retrains, the same rows come back.
  stamps = {p: p.stat().st_mtime for p in tmp_path.rglob("*") if p.is_file()
            and "summary" not in p.name}
  assert em.run(config, str(tmp_path), progress=False) == rows
  assert all(p.stat().st_mtime == t for p, t in stamps.items())


def test_bad_bolt_config_is_named():
  from ponder_jax.bolt import em  # pylint: disable=import-outside-toplevel
  config = _tiny_bolt_config()
  for key, value, message in (("restart", "sometimes", "bolt.restart"),
                              ("iterations", 0, "bolt.iterations"),
                              ("base", "/no/such/dir", "bolt.base")):
    with pytest.raises(ConfigError, match=message):
      em.BoltConfig.from_config({**config.bolt.to_dict(), key: value})
  with pytest.raises(ConfigError, match="bolt.estep.num_samples"):
    em.BoltConfig.from_config({**config.bolt.to_dict(),
                               "estep": {**config.bolt.estep.to_dict(), "num_samples": 0}})
