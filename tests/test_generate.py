"""Cached pondering generation against full recompute, sampling against its definition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ponder_jax.config import ConfigError, PonderConfig
from ponder_jax.infer import Engine, SamplingConfig
from ponder_jax.infer.generate import sample
from ponder_jax.model import ponder
from ponder_jax.model.transformer import Transformer
from tests.helpers import init_params, tiny_config

PAD, PAUSE = 0, 3
PROMPTS = [[5, 17, 33, 8, 41, 9, 12], [22, 7], [60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71,
                                                72, 73, 74, 75, 76, 77, 78]]


def full_recompute_logits(model, params, ponder_cfg, steps, sequence):
  tokens = jnp.asarray([sequence], jnp.int32)
  return np.asarray(jax.jit(lambda p, t: ponder.forward(model, p, t, ponder=ponder_cfg,
                                                        ponder_steps=steps))(params, tokens))[0]


@pytest.mark.parametrize("family, steps, options", [
    ("gpt2", 0, {}),
    ("neox", 1, dict(scale_embeds=True)),
    ("llama", 3, dict(scale_embeds=True, multiply_initial=True, top_k=5)),
    ("gpt2", 3, dict(top_k=7)),
    ("neox", 3, {}),
    ("llama", 1, {}),
])
def test_cached_decode_equals_full_recompute(family, steps, options):
  cfg = tiny_config(family)
  model, params = init_params(cfg, ponder_passes=steps + 1)
  ponder_cfg = PonderConfig(steps=steps, **options)
  gen = Engine(model, params, ponder_cfg, pad_id=PAD, pause_id=PAUSE)
  out = gen.generate(PROMPTS, max_new_tokens=12, return_logits=True)
  assert out.tokens.shape == (3, 12) and (out.lengths == 12).all()
  assert not (out.tokens == PAUSE).any()
  for i, prompt in enumerate(PROMPTS):
    want = full_recompute_logits(model, params, ponder_cfg, steps,
                                 prompt + out.tokens[i].tolist())
    want = want[len(prompt) - 1:len(prompt) - 1 + 12]
    np.testing.assert_allclose(out.logits[i], want, atol=1e-5, rtol=1e-5)
    masked = want.copy()
    masked[:, PAUSE] = -np.inf
    np.testing.assert_array_equal(out.tokens[i], masked.argmax(-1))
    # Greedy: the model log-probs are those of the recomputed logits.
    log_probs = jax.nn.log_softmax(want, axis=-1)
    np.testing.assert_allclose(out.model_logprobs[i],
                               np.take_along_axis(log_probs, out.tokens[i][:, None], 1)[:, 0],
                               atol=1e-5)
  np.testing.assert_array_equal(out.logprobs, 0.0)  # greedy: a point mass


def test_stop_tokens_end_rows_independently():
  model, params = init_params(tiny_config("neox"))
  gen = Engine(model, params, PonderConfig(), pad_id=PAD)
  free = gen.generate(PROMPTS, max_new_tokens=8)
  stop = int(free.tokens[0, 2])  # row 0 produces this token third
  out = gen.generate(PROMPTS, max_new_tokens=8, stop_tokens=[stop])
  for row, full in zip(range(3), free.tokens):
    hits = np.flatnonzero(full == stop)
    n = hits[0] + 1 if hits.size else 8
    assert out.lengths[row] == n
    np.testing.assert_array_equal(out.tokens[row, :n], full[:n])
    assert (out.tokens[row, n:] == PAD).all() and (out.model_logprobs[row, n:] == 0).all()
  assert out.completions()[0][-1] == stop


def test_pause_inference_appends_exactly_m_pauses_and_never_samples_one():
  model, params = init_params(tiny_config("llama"), ponder_passes=2)
  # Make <pause> the model's favourite token: it must still never be sampled.
  params = jax.tree.map(lambda x: x, params)
  params["lm_head"] = params["lm_head"].at[:, PAUSE].add(100.0)
  gen = Engine(model, params, PonderConfig(steps=1), pad_id=PAD, pause_id=PAUSE)
  out = gen.generate(PROMPTS, max_new_tokens=6, num_pauses=4)
  for prompt, fed in zip(PROMPTS, out.prompts):
    assert fed == prompt + [PAUSE] * 4
  assert not (out.tokens == PAUSE).any()
  sampled = gen.generate(PROMPTS, max_new_tokens=6, num_pauses=4,
                         sampling=SamplingConfig(temperature=1.0), seed=3)
  assert not (sampled.tokens == PAUSE).any()
  # M = 0 is plain generation; pauses change what the model sees.
  plain = gen.generate(PROMPTS, max_new_tokens=6, num_pauses=0)
  assert plain.prompts == PROMPTS
  direct = gen.generate([p for p in PROMPTS], max_new_tokens=6)
  np.testing.assert_array_equal(plain.tokens, direct.tokens)
  paused_by_hand = gen.generate([p + [PAUSE] * 4 for p in PROMPTS], max_new_tokens=6)
  np.testing.assert_array_equal(out.tokens, paused_by_hand.tokens)


def test_top_k_one_and_low_temperature_equal_greedy():
  model, params = init_params(tiny_config("gpt2"))
  gen = Engine(model, params, PonderConfig(), pad_id=PAD)
  greedy = gen.generate(PROMPTS, max_new_tokens=8)
  for sampling in (SamplingConfig(temperature=1.0, top_k=1),
                   SamplingConfig(temperature=1e-4), SamplingConfig(temperature=0.7, top_p=1e-6)):
    out = gen.generate(PROMPTS, max_new_tokens=8, sampling=sampling, seed=11)
    np.testing.assert_array_equal(out.tokens, greedy.tokens)


def test_sampled_log_probs_equal_an_independent_recomputation():
  model, params = init_params(tiny_config("neox"), ponder_passes=2)
  ponder_cfg = PonderConfig(steps=1)
  gen = Engine(model, params, ponder_cfg, pad_id=PAD, pause_id=PAUSE)
  sampling = SamplingConfig(temperature=0.8, top_k=20, top_p=0.9)
  out = gen.generate(PROMPTS, max_new_tokens=10, sampling=sampling, seed=5)
  for i, prompt in enumerate(PROMPTS):
    logits = full_recompute_logits(model, params, ponder_cfg, 1, prompt + out.tokens[i].tolist())
    logits = logits[len(prompt) - 1:len(prompt) - 1 + 10].astype(np.float64)
    model_lp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    scaled = logits / 0.8
    scaled[:, PAUSE] = -np.inf
    for j, token in enumerate(out.tokens[i]):
      row = scaled[j].copy()
      row[row < np.sort(row)[-20]] = -np.inf  # top-k
      order = np.argsort(-row)
      probs = np.exp(row[order] - np.logaddexp.reduce(row[order]))
      keep = order[(np.cumsum(probs) - probs) < 0.9]  # top-p
      kept = np.full_like(row, -np.inf)
      kept[keep] = row[keep]
      assert token in keep
      want_q = kept[token] - np.logaddexp.reduce(kept[keep])
      np.testing.assert_allclose(out.logprobs[i, j], want_q, atol=1e-4)
      np.testing.assert_allclose(out.model_logprobs[i, j], model_lp[j, token], atol=1e-4)


def test_ten_thousand_draws_follow_the_distribution():
  probs = np.asarray([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
  logits = jnp.log(jnp.asarray(probs, jnp.float32))[None]
  allowed = jnp.ones(6, bool)
  keys = jax.random.split(jax.random.key(0), 10_000)
  draws = jax.jit(jax.vmap(lambda k: sample(k, logits, SamplingConfig(temperature=1.0),
                                            allowed)[0][0]))(keys)
  counts = np.bincount(np.asarray(draws), minlength=6)
  assert stats.chisquare(counts, probs * 10_000).pvalue > 1e-3
  # Temperature 2 draws from softmax(log p / 2).
  tempered = np.sqrt(probs) / np.sqrt(probs).sum()
  draws = jax.jit(jax.vmap(lambda k: sample(k, logits, SamplingConfig(temperature=2.0),
                                            allowed)[0][0]))(keys)
  counts = np.bincount(np.asarray(draws), minlength=6)
  assert stats.chisquare(counts, tempered * 10_000).pvalue > 1e-3


def test_seeded_sampling_is_reproducible():
  model, params = init_params(tiny_config("llama"))
  gen = Engine(model, params, PonderConfig(), pad_id=PAD)
  sampling = SamplingConfig(temperature=1.0)
  a = gen.generate(PROMPTS, max_new_tokens=8, sampling=sampling, seed=1)
  b = gen.generate(PROMPTS, max_new_tokens=8, sampling=sampling, seed=1)
  c = gen.generate(PROMPTS, max_new_tokens=8, sampling=sampling, seed=2)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert (a.tokens != c.tokens).any()


def test_generation_on_an_8_device_mesh_equals_one_device():
  from ponder_jax.sharding import make_mesh  # pylint: disable=import-outside-toplevel
  cfg = tiny_config("llama", n_heads=4, n_kv_heads=2, vocab_size=96)  # splits over tensor
  model, params = init_params(cfg, ponder_passes=2)
  single = Engine(model, params, PonderConfig(steps=1), pad_id=PAD).generate(
      PROMPTS, max_new_tokens=6, return_logits=True)
  for ici, rules in ((dict(data=4, fsdp=1, tensor=2), "fsdp_tp"),
                     (dict(data=2, fsdp=4, tensor=1), "fsdp")):
    mesh = make_mesh(ici, devices=jax.devices()[:8])
    sharded = Engine(model, params, PonderConfig(steps=1), pad_id=PAD, mesh=mesh,
                        rules=rules).generate(PROMPTS, max_new_tokens=6, return_logits=True)
    np.testing.assert_array_equal(sharded.tokens, single.tokens)
    np.testing.assert_allclose(sharded.logits, single.logits, atol=1e-5, rtol=1e-5)


def test_bad_input_names_the_problem():
  model, params = init_params(tiny_config("neox"))  # max_len 64
  gen = Engine(model, params, PonderConfig(), pad_id=PAD)
  with pytest.raises(ConfigError, match=r"prompts\[1\].*empty"):
    gen.generate([[5], []], max_new_tokens=4)
  with pytest.raises(ConfigError, match=r"prompts\[0\].*max_len = 64"):
    gen.generate([list(range(1, 70))], max_new_tokens=4)
  with pytest.raises(ConfigError, match="max_new_tokens"):
    gen.generate([[5]], max_new_tokens=0)
  with pytest.raises(ConfigError, match="max_new_tokens.*exceeds"):
    gen.generate([list(range(1, 60))], max_new_tokens=10)
  with pytest.raises(ConfigError, match=r"prompts\[0\].*token id"):
    gen.generate([[5, 1000]], max_new_tokens=2)
  with pytest.raises(ConfigError, match="num_pauses.*no <pause>"):
    gen.generate([[5]], max_new_tokens=2, num_pauses=2)
  with pytest.raises(ConfigError, match="top_p"):
    gen.generate([[5]], max_new_tokens=2, sampling=SamplingConfig(temperature=1, top_p=0))


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
def test_greedy_equals_transformers_generate(family):
  """An imported tiny Hugging Face model decodes token for token as transformers' own cached
  greedy `generate` does."""
  import torch  # pylint: disable=import-outside-toplevel
  from ponder_jax.convert import import_hf  # pylint: disable=import-outside-toplevel
  from tests.test_convert import hf_model  # pylint: disable=import-outside-toplevel
  reference = hf_model(family)
  cfg, params = import_hf(reference)
  model = Transformer(cfg)
  engine = Engine(model, params, PonderConfig(), pad_id=PAD)
  prompts = [[5, 17, 33, 8, 41, 9, 12], [22, 7], [60, 61, 62, 63, 64, 65, 66, 67, 68, 69]]
  ours = engine.generate(prompts, max_new_tokens=16, stop_tokens=[0]).completions()
  for prompt, got in zip(prompts, ours):
    with torch.no_grad():
      out = reference.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                                                                               dtype=torch.long),
                               max_new_tokens=16, do_sample=False, use_cache=True,
                               eos_token_id=0, pad_token_id=0)
    assert out[0, len(prompt):].tolist() == got


def test_ponder_generate_cli_on_a_trained_workdir(tmp_path, capsys):
  import json  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  from ponder_jax.infer import cli, load  # pylint: disable=import-outside-toplevel
  from ponder_jax.sweep import load_config  # pylint: disable=import-outside-toplevel
  from ponder_jax.experiment import Experiment  # pylint: disable=import-outside-toplevel
  from ponder_jax.train.trainer import Trainer  # pylint: disable=import-outside-toplevel
  config = load_config(os.path.join(os.path.dirname(__file__), "configs", "tiny.py"))
  config.ponder.update(dict(steps=1, scale_embeds=True))
  workdir = str(tmp_path / "run")
  config.mesh.ici.data = 1  # one of the 8 simulated devices
  exp = Experiment.from_config(config)
  Trainer(exp, workdir, devices=jax.devices()[:1]).run()
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text('{"prompt": "ROMEO:"}\n\n{"prompt": "To be, or not"}\n')
  out = tmp_path / "out.jsonl"
  cli.main(["--model", workdir, "--prompts", str(prompts), "--out", str(out),
            "--max-new-tokens", "8", "--num-pauses", "2"])
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r["prompt"] for r in rows] == ["ROMEO:", "To be, or not"]
  loaded = load.load(workdir)
  vocab = loaded.vocab
  want = loaded.engine.generate([[vocab.bos_id] + vocab.encode(r["prompt"]) for r in rows],
                                max_new_tokens=8, num_pauses=2, stop_tokens=[vocab.eos_id])
  assert [r["tokens"] for r in rows] == want.completions()
  assert "ROMEO:" in capsys.readouterr().out
  # Bad input names what is wrong.
  (tmp_path / "empty").mkdir()
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"prompt": "a"}\n{"prompt": 3}\n')
  for args, message in ((["--model", str(tmp_path / "empty"), "--prompt", "x"],
                         "no trainer checkpoint under"),
                        (["--model", workdir, "--prompts", str(bad)], f"{bad}:2"),
                        (["--model", workdir, "--prompt", "x", "--max-new-tokens", "0"],
                         "max_new_tokens")):
    with pytest.raises(SystemExit):
      cli.main(args)
    assert message in capsys.readouterr().err
