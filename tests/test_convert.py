"""Hugging Face interop against real `transformers` models: logit parity in and out, sharded
import, tokenizers with added tokens, the CLI, and refusals of bad or unsafe input; pondering
models exported with their loop (logits and greedy decoding against the project's forward), the
project's vocabularies as Hugging Face tokenizers, and the trained demo-style model end to end.

Reference models are tiny random GPT2LMHeadModel / GPTNeoXForCausalLM / LlamaForCausalLM built
from configs, with every weight (norms and biases included) moved off its init so that a
swapped or dropped tensor changes the logits. fp32, torch eval mode.
"""

import dataclasses
import json
import os
import pickle

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from ponder_jax import sharding
from ponder_jax.config import ConfigError, PonderConfig
from ponder_jax.convert import (cli, export_hf, hf_vocabulary, import_hf, load_hf_vocabulary,
                                load_pretrained, read_ponder_config)
from ponder_jax.convert import sources
from ponder_jax.convert.sources import CheckpointError
from ponder_jax.data import sources as data_sources
from ponder_jax.data.vocab import load_vocabulary
from ponder_jax.model import ponder as ponder_lib
from ponder_jax.model.transformer import Transformer
from tests.helpers import init_params, tiny_config

VOCAB = 96  # even, so the vocab axis splits over tensor=2
MAX_LEN = 48
TOL = 1e-4


def _hf_config(family: str, **overrides):
  common = dict(vocab_size=VOCAB, bos_token_id=0, eos_token_id=0)
  if family == "gpt2":
    kwargs = dict(n_positions=MAX_LEN, n_embd=32, n_layer=2, n_head=4)
    return transformers.GPT2Config(**{**common, **kwargs, **overrides})
  if family == "neox":  # partial rotary (4 of 16 dims), parallel residual, untied head
    kwargs = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=48, rotary_pct=0.25, rotary_emb_base=1000,
                  max_position_embeddings=MAX_LEN, use_parallel_residual=True)
    return transformers.GPTNeoXConfig(**{**common, **kwargs, **overrides})
  kwargs = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,  # GQA: 4 q, 2 kv
                num_key_value_heads=2, intermediate_size=48, max_position_embeddings=MAX_LEN,
                rope_theta=500.0, rms_norm_eps=1e-5)
  return transformers.LlamaConfig(**{**common, **kwargs, **overrides})


def hf_model(family: str, seed: int = 0, **overrides):
  torch.manual_seed(seed)
  config = _hf_config(family, **overrides)
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return model


def save_model(model, directory) -> str:
  model.save_pretrained(str(directory))
  return str(directory)


def batch(vocab: int = VOCAB, seed: int = 0):
  """[3, MAX_LEN] tokens and mask: two full-length rows and one right-padded to 10 tokens."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, vocab, (3, MAX_LEN)).astype(np.int32)
  mask = np.ones_like(tokens)
  mask[1, 10:] = 0
  tokens[1, 10:] = 0
  return tokens, mask


def hf_logits(model, tokens, mask) -> np.ndarray:
  with torch.no_grad():
    return model(input_ids=torch.tensor(tokens, dtype=torch.long),
                 attention_mask=torch.tensor(mask)).logits.numpy()


def our_logits(cfg, params, tokens, mask) -> np.ndarray:
  positions = np.broadcast_to(np.arange(tokens.shape[1], dtype=np.int32), tokens.shape)
  apply = jax.jit(Transformer(cfg).apply)
  return np.asarray(apply({"params": params}, jnp.asarray(tokens), jnp.asarray(positions),
                          jnp.asarray(mask)))


def max_diff(a, b, mask) -> float:
  """Largest |a - b| over the real (unpadded) positions."""
  return float(np.abs(a - b)[mask.astype(bool)].max())


FAMILIES = {
    "gpt2": dict(family="gpt2"),
    "neox": dict(family="neox"),
    "llama": dict(family="llama"),
    "llama_tied": dict(family="llama", tie_word_embeddings=True),
    "gpt2_untied": dict(family="gpt2", tie_word_embeddings=False),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def saved(request, tmp_path_factory):
  kwargs = dict(FAMILIES[request.param])
  model = hf_model(kwargs.pop("family"), **kwargs)
  return request.param, model, save_model(model, tmp_path_factory.mktemp(request.param))


def test_import_and_export_match_transformers(saved, tmp_path):
  name, model, directory = saved
  tokens, mask = batch()
  want = hf_logits(model, tokens, mask)
  cfg, params = import_hf(directory)
  assert cfg.family == FAMILIES[name]["family"]
  assert cfg.tie_embeddings == model.config.tie_word_embeddings
  got = our_logits(cfg, params, tokens, mask)
  diff = max_diff(got, want, mask)
  print(f"{name}: import max |logit diff| = {diff:.2e}")
  assert diff <= TOL, name
  assert np.abs(want).max() > 1.0  # the comparison is not between near-zero logits

  # In memory, the same model gives the same params.
  _, params_mem = import_hf(model)
  jax.tree.map(np.testing.assert_array_equal, params, params_mem)

  export_hf(cfg, params, tmp_path)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  assert type(reloaded) is type(model)
  diff = max_diff(hf_logits(reloaded, tokens, mask), want, mask)
  print(f"{name}: export max |logit diff| = {diff:.2e}")
  assert diff <= TOL, name
  assert import_hf(tmp_path)[0] == cfg


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
def test_sharded_import_matches_single_device(family, tmp_path, monkeypatch):
  directory = save_model(hf_model(family), tmp_path)
  cfg, single = import_hf(directory)

  reads = []
  original_read = sources.SafetensorsSource.read

  def recording_read(self, name, rows=None):
    out = original_read(self, name, rows)
    reads.append((name, out.shape))
    return out
  monkeypatch.setattr(sources.SafetensorsSource, "read", recording_read)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  rules = sharding.logical_rules("fsdp_tp")
  cfg_mesh, params = import_hf(directory, mesh=mesh, rules="fsdp_tp")
  assert cfg_mesh == cfg

  # The embedding table is read shard by shard (vocab split over tensor=2), never whole.
  embed_reads = [shape for name, shape in reads if name.endswith(("wte.weight", "embed_in.weight",
                                                                    "embed_tokens.weight"))]
  assert embed_reads and all(shape == (VOCAB // 2, cfg.d_model) for shape in embed_reads)
  assert tuple(params["token_embed"].sharding.spec) == ("tensor", "fsdp")
  assert tuple(params["layers"]["attention"]["query"]["kernel"].sharding.spec) == (
      None, "fsdp", "tensor", None)
  assert tuple(params["layers"]["mlp"]["down"]["kernel"].sharding.spec) == (None, "tensor", "fsdp")
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               params, single)

  tokens, _ = batch()
  tokens = np.concatenate([tokens, tokens[:1, ::-1]])  # 4 rows: the batch splits over data x fsdp
  model = Transformer(cfg)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    placed = jax.device_put(jnp.asarray(tokens), sharding.batch_sharding(mesh))
    logits = jax.jit(model.apply)({"params": params}, placed)
  want = our_logits(cfg, single, tokens, np.ones_like(tokens))
  np.testing.assert_allclose(np.asarray(logits), want, atol=1e-5, rtol=1e-5)


def test_indivisible_vocab_on_mesh_is_reported():
  model = hf_model("llama", vocab_size=97)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  with pytest.raises(ValueError, match=r"param 'lm_head' of shape \(32, 97\).*vocab_multiple"):
    import_hf(model, mesh=mesh, rules="fsdp_tp")


def test_bf16_sharded_and_pickled_checkpoints_import_exactly(tmp_path):
  model = hf_model("llama")
  bf16_dir = tmp_path / "bf16"
  model.to(torch.bfloat16).save_pretrained(str(bf16_dir), max_shard_size="20KB")
  assert (bf16_dir / "model.safetensors.index.json").is_file()
  # bf16 -> fp32 is exact: the reference is the bf16 file loaded in fp32 (its RoPE buffers fp32).
  model = transformers.AutoModelForCausalLM.from_pretrained(str(bf16_dir),
                                                            dtype=torch.float32).eval()
  cfg, params = import_hf(bf16_dir)
  embed = model.model.embed_tokens.weight.detach().numpy()
  np.testing.assert_array_equal(np.asarray(params["token_embed"]), embed)
  source = sources.open_directory(str(bf16_dir))  # bf16 row ranges, as a mesh import reads them
  np.testing.assert_array_equal(source.read("model.embed_tokens.weight", slice(5, 9)), embed[5:9])
  tokens, mask = batch()
  want = hf_logits(model, tokens, mask)
  assert max_diff(our_logits(cfg, params, tokens, mask), want, mask) <= TOL

  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  model.config.save_pretrained(str(bin_dir))
  torch.save(model.state_dict(), bin_dir / "pytorch_model.bin")
  _, bin_params = import_hf(bin_dir)
  jax.tree.map(np.testing.assert_array_equal, params, bin_params)


class _WritesMarker:
  """Unpickling this calls open(marker, 'w'): code execution a weights file must never get."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch, about the plain pickle
@pytest.mark.parametrize("writer", ["pickle", "torch"])
def test_code_executing_pickle_is_refused(writer, tmp_path):
  marker = tmp_path / "pwned"
  directory = tmp_path / "model"
  directory.mkdir()
  hf_model("gpt2").config.save_pretrained(str(directory))
  payload = {"transformer.wte.weight": _WritesMarker(marker)}
  if writer == "pickle":
    with open(directory / "pytorch_model.bin", "wb") as f:
      pickle.dump(payload, f)
  else:
    torch.save(payload, directory / "pytorch_model.bin")
  with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: refused to unpickle"):
    import_hf(directory)
  assert not marker.exists()

  # Next to safetensors, the pickle is never opened.
  save_model(hf_model("gpt2"), directory)
  import_hf(directory)
  assert not marker.exists()


def _rewrite(directory, edit) -> str:
  path = os.path.join(directory, "model.safetensors")
  tensors = load_file(path)
  edit(tensors)
  save_file(tensors, path, metadata={"format": "pt"})
  return path


def test_bad_checkpoints_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="no such Hugging Face model directory"):
    import_hf(tmp_path / "absent")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match=r"empty/config.json: missing"):
    import_hf(empty)
  hf_model("llama").config.save_pretrained(str(empty))
  with pytest.raises(FileNotFoundError, match=r"no weights found.*model\.safetensors"):
    import_hf(empty)

  directory = save_model(hf_model("llama"), tmp_path / "llama")
  name = "model.layers.1.self_attn.k_proj.weight"
  path = _rewrite(directory, lambda t: t.update({name: t[name][:8]}))
  with pytest.raises(CheckpointError) as error:
    import_hf(directory)
  message = str(error.value)
  for part in (path, name, "has shape (8, 32)", "expected (16, 32)", "config.json"):
    assert part in message, (part, message)

  _rewrite(directory, lambda t: t.pop(name))
  with pytest.raises(CheckpointError, match=rf"tensor '{name}' is missing"):
    import_hf(directory)

  directory = save_model(hf_model("llama"), tmp_path / "extra")
  _rewrite(directory, lambda t: t.update({"model.layers.0.self_attn.q_proj.bias":
                                          np.zeros(32, np.float32)}))
  with pytest.raises(CheckpointError, match=r"1 tensor\(s\) have no place.*q_proj.bias"):
    import_hf(directory)

  sharded = tmp_path / "sharded"
  hf_model("llama").save_pretrained(str(sharded), max_shard_size="20KB")
  shard = sorted(p for p in os.listdir(sharded) if p.endswith(".safetensors"))[-1]
  os.remove(sharded / shard)
  with pytest.raises(FileNotFoundError, match=rf"index.json lists shard .*{shard}"):
    import_hf(sharded)


@pytest.mark.parametrize("family, overrides, key", [
    ("neox", dict(use_parallel_residual=False), "use_parallel_residual"),
    ("neox", dict(hidden_act="relu"), "hidden_act"),
    ("llama", dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope"),
    ("llama", dict(attention_bias=True), "attention_bias"),
    ("gpt2", dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
    ("gpt2", dict(activation_function="relu"), "activation_function"),
])
def test_unsupported_variants_are_refused(family, overrides, key, tmp_path):
  directory = save_model(hf_model(family, **overrides), tmp_path)
  with pytest.raises(ConfigError,
                     match=rf"config.json:{key}\S*' = .*(not supported|only 'default')"):
    import_hf(directory)


def test_unsupported_architecture_is_refused(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
  with pytest.raises(ConfigError, match=r"config.json:model_type' = 'bert'.*gpt2.*gpt_neox.*llama"):
    import_hf(tmp_path)


# Tokenizers ---------------------------------------------------------------------------------
TEXT = ["the quick brown fox jumps over the lazy dog", "a pondering model thinks before it speaks",
        "pause tokens give the model time", "latent thoughts explain the text they annotate",
        "odd <marks> and |bars| too"]


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
  """A Pythia-style directory: BPE tokenizer.json + tokenizer_config.json + an untied model."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=import-outside-toplevel
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  tokenizer.train_from_iterator(TEXT * 4, trainers.BpeTrainer(
      vocab_size=VOCAB, special_tokens=["<|endoftext|>"], show_progress=False))
  base = tokenizer.get_vocab_size()
  directory = tmp_path_factory.mktemp("pythia")
  model = hf_model("neox", vocab_size=base)
  save_model(model, directory)
  tokenizer.save(str(directory / "tokenizer.json"))
  (directory / "tokenizer_config.json").write_text(json.dumps(
      {"eos_token": "<|endoftext|>", "bos_token": {"content": "<|endoftext|>"},
       "tokenizer_class": "GPTNeoXTokenizer"}))
  return model, str(directory), base


def test_load_pretrained_adds_tokens_with_mean_rows(tokenized, tmp_path):
  model, directory, base = tokenized
  cfg, params, vocab = load_pretrained(directory, num_procedural=3, vocab_multiple=16)
  new_ids = list(range(base, base + 8))
  assert [vocab.pause_id, vocab.sol_id, vocab.eol_id, vocab.prior_id, vocab.posterior_id] == (
      new_ids[:5])
  assert list(vocab.procedural_id(np.arange(3))) == new_ids[5:]
  assert vocab.procedural_id(2) == new_ids[7]
  with pytest.raises(ValueError, match="outside 0 .. 2"):
    vocab.procedural_id(3)
  assert vocab.eos_id == vocab.bos_id == vocab.pad_id == 0  # pad falls back to eos
  assert vocab.vocab_size == base + 8 and cfg.vocab_size == 16 * -(-(base + 8) // 16)
  assert vocab.added_ids == tuple(new_ids)

  embed = np.asarray(params["token_embed"])
  head = np.asarray(params["lm_head"])
  old_embed = model.gpt_neox.embed_in.weight.detach().numpy()
  old_head = model.get_output_embeddings().weight.detach().numpy()
  np.testing.assert_array_equal(embed[:base], old_embed)
  np.testing.assert_array_equal(head[:, :base], old_head.T)
  # Every new row (new tokens and the rounding rows alike) is the mean of the original rows.
  np.testing.assert_allclose(embed[base:], np.broadcast_to(old_embed.mean(0), embed[base:].shape),
                             atol=1e-6)
  np.testing.assert_allclose(head[:, base:].T,
                             np.broadcast_to(old_head.mean(0), head[:, base:].T.shape), atol=1e-6)

  tokens, mask = batch(vocab=base)
  got = our_logits(cfg, params, tokens, mask)[..., :base]
  assert max_diff(got, hf_logits(model, tokens, mask), mask) <= TOL

  text = TEXT[1] + " <pause> " + TEXT[2]
  ids = vocab.encode(text)
  assert vocab.pause_id not in ids  # typed specials stay text, as in the project's vocabularies
  assert vocab.decode(ids) == text
  assert vocab.encode_batch(TEXT[:2]) == [vocab.encode(t) for t in TEXT[:2]]
  assert vocab.decode([vocab.pause_id, vocab.sol_id]) == "<pause><|START_OF_LATENT|>"

  # Export with the tokenizer; transformers reads both, and a re-import adds nothing.
  export_hf(cfg, params, tmp_path, vocabulary=vocab)
  hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  assert hf_tokenizer.convert_tokens_to_ids("<pause>") == vocab.pause_id
  assert hf_tokenizer(TEXT[0])["input_ids"] == vocab.encode(TEXT[0])
  assert json.loads((tmp_path / "config.json").read_text())["eos_token_id"] == vocab.eos_id
  cfg2, params2, vocab2 = load_pretrained(tmp_path, add_tokens=False)
  assert cfg2 == cfg and vocab2.added_ids == () and vocab2.special_ids == vocab.special_ids
  assert vocab2.num_procedural == 3
  jax.tree.map(np.testing.assert_array_equal, params, params2)


def test_normal_row_init_and_bad_options(tokenized):
  _, directory, base = tokenized
  _, params, _ = load_pretrained(directory, new_row_init="normal", new_row_std=0.5,
                                 vocab_multiple=64, seed=1)
  _, again, _ = load_pretrained(directory, new_row_init="normal", new_row_std=0.5,
                                vocab_multiple=64, seed=1)
  new_rows = np.asarray(params["token_embed"])[base:]
  np.testing.assert_array_equal(new_rows, np.asarray(again["token_embed"])[base:])
  assert 0.4 < new_rows.std() < 0.6 and abs(new_rows.mean()) < 0.1
  with pytest.raises(ConfigError, match="new_row_init"):
    load_pretrained(directory, new_row_init="zeros")
  with pytest.raises(ValueError, match=r"lacks \['<pause>'"):
    load_hf_vocabulary(directory, add_tokens=False)


def test_load_pretrained_onto_mesh_matches_host(tokenized):
  _, directory, _ = tokenized
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  cfg, params, _ = load_pretrained(directory, mesh=mesh, rules="fsdp_tp", num_procedural=3,
                                   vocab_multiple=16)
  cfg_host, host, _ = load_pretrained(directory, num_procedural=3, vocab_multiple=16)
  assert cfg == cfg_host
  assert tuple(params["lm_head"].sharding.spec) == ("fsdp", "tensor")
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               params, host)


# CLI ----------------------------------------------------------------------------------------
def test_cli_round_trip_with_tokenizer(tokenized, tmp_path):
  model, directory, base = tokenized
  cli.main(["--from-hf", directory, "--out", str(tmp_path / "ckpt"), "--num-procedural", "2"])
  assert (tmp_path / "ckpt" / "model_config.json").is_file()
  cli.main(["--to-hf", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf")])
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
  tokens, mask = batch(vocab=base)
  got = hf_logits(reloaded, tokens, mask)[..., :base]
  assert max_diff(got, hf_logits(model, tokens, mask), mask) <= TOL
  vocab = load_hf_vocabulary(str(tmp_path / "hf"), add_tokens=False)
  assert vocab.num_procedural == 2 and vocab.pause_id == base


def test_cli_weights_only_round_trip(tmp_path):
  model = hf_model("llama")
  directory = save_model(model, tmp_path / "hf")
  cli.main(["--from-hf", directory, "--out", str(tmp_path / "ckpt"), "--weights-only"])
  assert not (tmp_path / "ckpt" / "tokenizer").exists()
  cli.main(["--to-hf", str(tmp_path / "ckpt"), "--out", str(tmp_path / "back")])
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "back")).eval()
  tokens, mask = batch()
  assert max_diff(hf_logits(reloaded, tokens, mask), hf_logits(model, tokens, mask), mask) <= TOL


def test_cli_exports_a_trainer_checkpoint(tmp_path):
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  import dataclasses  # pylint: disable=import-outside-toplevel
  model = hf_model("gpt2")
  cfg, params = import_hf(model)
  manager = ocp.CheckpointManager(
      str(tmp_path / "work" / "checkpoints"),
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "config": ocp.JsonCheckpointHandler()})
  state = {"params": params, "step": jnp.asarray(7)}
  manager.save(7, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      config=ocp.args.JsonSave({"model": dataclasses.asdict(cfg), "train": {"steps": 7}})))
  manager.wait_until_finished()
  cli.main(["--to-hf", str(tmp_path / "work"), "--out", str(tmp_path / "hf")])
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
  tokens, mask = batch()
  assert max_diff(hf_logits(reloaded, tokens, mask), hf_logits(model, tokens, mask), mask) <= TOL


def test_cli_reports_bad_input(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["--from-hf", str(tmp_path / "absent"), "--out", str(tmp_path / "out")])
  assert exit_info.value.code == 2
  assert "absent: no such Hugging Face model directory" in capsys.readouterr().err


def test_trainer_continues_pretraining_from_hf_with_pondering_and_pauses(tokenized, tmp_path):
  """`init.from_hf` builds the model, vocabulary and initial params from the HF directory;
  training then runs with pondering, pauses and a procedural source switched on."""
  from ponder_jax.sweep import load_config  # pylint: disable=import-outside-toplevel
  from ponder_jax.train import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  from ponder_jax.train.metrics import read_metrics  # pylint: disable=import-outside-toplevel
  from ponder_jax.train.trainer import build_trainer  # pylint: disable=import-outside-toplevel
  _, directory, base = tokenized
  config = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "smoke.py"))
  config.init.from_hf = directory
  config.ponder.steps = 1
  config.data.pause.ratio = 0.1
  config.data.seq_len = 32
  config.data.sources.dyck.length = 16
  config.train.steps = 4
  config.mesh.ici.update(data=2, fsdp=4)
  trainer = build_trainer(config, str(tmp_path))
  _, imported, vocab = load_pretrained(directory, num_procedural=256)
  assert trainer.exp.model.family == "neox" and trainer.exp.vocab.pause_id == vocab.pause_id
  assert trainer.exp.model.vocab_size >= base + 5 + 256
  initial = jax.device_get(trainer.init_state().params)
  jax.tree.map(np.testing.assert_array_equal, initial, imported)
  trainer.run()
  rows = [r for r in read_metrics(str(tmp_path)) if "loss" in r]
  assert rows and all(np.isfinite(r["loss"]) for r in rows)
  trained = ckpt_lib.load_params(str(tmp_path))
  assert not np.array_equal(trained["token_embed"], imported["token_embed"])


# Pondering exports ----------------------------------------------------------------------------
# Each s with the switches that change it: s = 0 still scales E0; s = 1 mixes over the whole
# vocabulary from s * E0; s = 3 over the top 8 tokens.
PONDER_CASES = {
    0: PonderConfig(steps=0, scale_embeds=True),
    1: PonderConfig(steps=1, scale_embeds=True, multiply_initial=True),
    3: PonderConfig(steps=3, scale_embeds=True, multiply_initial=True, top_k=8),
}
GREEDY_NEW = 8


def ponder_model(family: str, seed: int = 0, vocab_size: int = VOCAB, **overrides):
  """A tiny project model with every param moved off its init (as hf_model does)."""
  cfg = tiny_config(family, vocab_size=vocab_size, max_len=MAX_LEN, **overrides)
  model, params = init_params(cfg, seed=seed)
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
  leaves = [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
  return cfg, model, jax.tree_util.tree_unflatten(treedef, leaves)


def ponder_logits(model, params, ponder, tokens, mask=None) -> np.ndarray:
  """The project's forward (ponder.forward), fp32, with segment ids from the padding mask."""
  mask = np.ones_like(tokens) if mask is None else mask
  positions = np.broadcast_to(np.arange(tokens.shape[1], dtype=np.int32), tokens.shape)
  run = jax.jit(lambda p, t, pos, seg: ponder_lib.forward(model, p, t, pos, seg, ponder=ponder))
  return np.asarray(run(params, jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask)))


def greedy(model, params, ponder, prompt, new_tokens: int) -> list[list[int]]:
  """The project's greedy decoding by full recompute: argmax of the last position, append.

  The sequence lives in a fixed buffer (one compile): with causal passes, the positions after
  the last token do not change its logits.
  """
  prompt = np.asarray(prompt, np.int32)
  length = prompt.shape[1]
  tokens = np.zeros((prompt.shape[0], length + new_tokens), np.int32)
  tokens[:, :length] = prompt
  run = jax.jit(lambda p, t: ponder_lib.forward(model, p, t, ponder=ponder).argmax(-1))
  for last in range(length, length + new_tokens):
    tokens[:, last] = np.asarray(run(params, jnp.asarray(tokens)))[:, last - 1]
  return tokens.tolist()


def cached_greedy(model, params, ponder, prompt, new_tokens: int, stop_tokens=()):
  """The project's KV-cached greedy decoding (ponder_jax.infer), prompt included; None while
  that module is absent."""
  try:
    from ponder_jax.infer.engine import Engine  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  engine = Engine(model, params, ponder, pad_id=0, vocab_size=model.cfg.vocab_size)
  prompts = np.asarray(prompt).tolist()
  out = engine.generate(prompts, max_new_tokens=new_tokens, stop_tokens=stop_tokens)
  return [p + c for p, c in zip(prompts, out.completions())]


def until_eos(rows, eos):
  """Each row up to and including its first generated eos (transformers stops there)."""
  out = []
  for row in rows:
    out.append(row[:row.index(eos) + 1] if eos is not None and eos in row else row)
  return out


def hf_greedy(model, prompt, new_tokens: int, **kwargs) -> list[list[int]]:
  with torch.no_grad():
    out = model.generate(torch.tensor(np.asarray(prompt), dtype=torch.long),
                         attention_mask=torch.ones(np.shape(prompt), dtype=torch.long),
                         max_new_tokens=new_tokens, do_sample=False, **kwargs)
  return out.tolist()


def load_remote(directory):
  return transformers.AutoModelForCausalLM.from_pretrained(str(directory),
                                                           trust_remote_code=True).eval()


@pytest.mark.parametrize("steps", sorted(PONDER_CASES))
@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
def test_pondering_export_matches_the_project_forward_and_greedy_decoding(family, steps, tmp_path):
  ponder = PONDER_CASES[steps]
  # GPT-2 with a tied head at s = 0 and 3 (E_in is also the head), untied at s = 1.
  untied = dict(tie_embeddings=False) if family == "gpt2" and steps == 1 else {}
  cfg, model, params = ponder_model(family, seed=steps, **untied)
  assert export_hf(cfg, params, tmp_path, ponder=ponder) == []
  hf_config = json.loads((tmp_path / "config.json").read_text())
  assert hf_config["model_type"] == "ponder_" + hf_config["model_type"].removeprefix("ponder_")
  assert (tmp_path / "modeling_ponder.py").is_file() and "AutoModelForCausalLM" in (
      hf_config["auto_map"])
  reloaded = load_remote(tmp_path)
  assert type(reloaded).__name__.startswith("Ponder")

  tokens, mask = batch()
  want = ponder_logits(model, params, ponder, tokens, mask)
  diff = max_diff(hf_logits(reloaded, tokens, mask), want, mask)
  plain = max_diff(our_logits(cfg, params, tokens, mask), want, mask)
  prompt = tokens[[0, 2], :6]
  want_tokens = greedy(model, params, ponder, prompt, GREEDY_NEW)
  print(f"{family} s={steps}: export max |logit diff| = {diff:.2e} (plain backbone: {plain:.2f}); "
        f"greedy {[row[6:] for row in want_tokens]}")
  assert diff <= TOL and plain > 100 * TOL  # the plain backbone would fail this comparison
  assert np.abs(want).max() > 1.0
  assert len({t for row in want_tokens for t in row[6:]}) > 1  # not one repeated token
  assert hf_greedy(reloaded, prompt, GREEDY_NEW) == want_tokens
  # A cache of one pass would be wrong for the next: use_cache=True is overridden.
  assert hf_greedy(reloaded, prompt, GREEDY_NEW, use_cache=True) == want_tokens
  if steps == 3:  # the cached decoding compiles its own programs: the longest case only
    assert cached_greedy(model, params, ponder, prompt, GREEDY_NEW) in (None, want_tokens)

  # Round trip: the same model config, ponder settings and params come back.
  cfg_back, params_back = import_hf(tmp_path)
  assert cfg_back == cfg and read_ponder_config(tmp_path) == ponder
  jax.tree.map(np.testing.assert_array_equal, params_back, jax.device_get(params))
  assert read_ponder_config(reloaded) == ponder  # from the in-memory model too


def test_pondering_export_overrides_and_refusals(tmp_path):
  cfg, model, params = ponder_model("neox")
  ponder = PONDER_CASES[1]
  export_hf(cfg, params, tmp_path, ponder=ponder)
  # Without trust_remote_code the directory does not load as a plain GPT-NeoX.
  with pytest.raises(ValueError, match="trust_remote_code"):
    transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path))
  # The number of passes is a config key: more passes at inference than in training.
  three = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), trust_remote_code=True,
                                                            ponder_steps=3).eval()
  tokens, mask = batch()
  want = ponder_logits(model, params, dataclasses.replace(ponder, steps=3), tokens, mask)
  assert max_diff(hf_logits(three, tokens, mask), want, mask) <= TOL

  # Labels give transformers' shifted cross-entropy of the pondering logits.
  reloaded = load_remote(tmp_path)
  with torch.no_grad():
    out = reloaded(input_ids=torch.tensor(tokens[:1], dtype=torch.long),
                   labels=torch.tensor(tokens[:1], dtype=torch.long))
  logits = torch.tensor(ponder_logits(model, params, ponder, tokens[:1]))
  expected = torch.nn.functional.cross_entropy(logits[0, :-1], torch.tensor(tokens[0, 1:]).long())
  assert abs(float(out.loss) - float(expected)) < 1e-4

  edited = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps({**edited, "ponder_steps": -1}))
  with pytest.raises(ConfigError, match=r"config.json:ponder_steps' = -1: must be an integer"):
    read_ponder_config(tmp_path)
  with pytest.raises(ConfigError, match=r"config:ponder_nonsense' = 1: unknown key"):
    read_ponder_config({**edited, "ponder_nonsense": 1})
  with pytest.raises(ConfigError, match=r"model_type' = 'gpt_neox'.*transformers would run it "
                                        r"plain"):
    read_ponder_config({**edited, "model_type": "gpt_neox"})
  # A plain model exports plain, and a plain export over a pondering one leaves no modeling file.
  assert export_hf(cfg, params, tmp_path) == []
  assert not (tmp_path / "modeling_ponder.py").exists()
  assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "gpt_neox"
  assert read_ponder_config(tmp_path) == PonderConfig()


def _trainer_checkpoint(workdir, cfg, params, ponder, vocab="byte"):
  """A trainer-layout checkpoint (what train/checkpoint.py writes) of `params`."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  manager = ocp.CheckpointManager(
      str(workdir / "checkpoints"),
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "config": ocp.JsonCheckpointHandler()})
  manager.save(3, args=ocp.args.Composite(
      state=ocp.args.StandardSave({"params": params, "step": jnp.asarray(3)}),
      config=ocp.args.JsonSave({"model": dataclasses.asdict(cfg),
                                "ponder": dataclasses.asdict(ponder),
                                "data": {"vocab": vocab}, "init": {"from_hf": ""}})))
  manager.wait_until_finished()


def test_cli_never_exports_a_pondering_model_plain_without_the_flag(tmp_path, capsys):
  cfg, model, params = ponder_model("llama", vocab_size=576)
  ponder = PONDER_CASES[1]
  _trainer_checkpoint(tmp_path / "work", cfg, params, ponder)

  cli.main(["--to-hf", str(tmp_path / "work"), "--out", str(tmp_path / "hf")])
  printed = capsys.readouterr()
  assert "pondering llama model (s = 1, scale_embeds, multiply_initial)" in printed.out
  hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert hf_config["model_type"] == "ponder_llama" and hf_config["ponder_steps"] == 1
  # The run's byte vocabulary comes along by default, its special ids in config.json.
  assert (hf_config["pad_token_id"], hf_config["bos_token_id"], hf_config["eos_token_id"]) == (
      0, 1, 2)
  assert load_hf_vocabulary(str(tmp_path / "hf"), add_tokens=False).vocab_size == 576
  tokens, mask = batch(vocab=576)
  want = ponder_logits(model, params, ponder, tokens, mask)
  assert max_diff(hf_logits(load_remote(tmp_path / "hf"), tokens, mask), want, mask) <= TOL

  cli.main(["--to-hf", str(tmp_path / "work"), "--out", str(tmp_path / "plain"),
            "--plain-backbone", "--no-tokenizer"])
  printed = capsys.readouterr()
  assert "computes a different function" in printed.err
  for lost in ("ponder.steps = 1", "ponder.scale_embeds", "ponder.multiply_initial"):
    assert lost in printed.err, (lost, printed.err)
  assert "llama backbone, no tokenizer" in printed.out
  plain = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "plain")).eval()
  assert type(plain) is transformers.LlamaForCausalLM
  assert not (tmp_path / "plain" / "tokenizer.json").exists()
  assert not (tmp_path / "plain" / "modeling_ponder.py").exists()
  assert max_diff(hf_logits(plain, tokens, mask), our_logits(cfg, params, tokens, mask),
                  mask) <= TOL

  # --from-hf keeps the ponder settings; exporting that checkpoint again ponders the same way.
  cli.main(["--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "ckpt")])
  assert json.loads((tmp_path / "ckpt" / "ponder_config.json").read_text())["steps"] == 1
  cli.main(["--to-hf", str(tmp_path / "ckpt"), "--out", str(tmp_path / "again")])
  assert read_ponder_config(tmp_path / "again") == ponder
  assert max_diff(hf_logits(load_remote(tmp_path / "again"), tokens, mask), want, mask) <= TOL


# The project's tokenizers ---------------------------------------------------------------------
def _source_examples(vocab, name, section, count):
  spec = data_sources.validate_source(name, section)
  source = data_sources.open_source(spec, vocab, "train")
  return [source.example(source[i], np.random.default_rng(i))["tokens"].tolist()
          for i in range(count)]


@pytest.mark.parametrize("spec", ["sentencepiece", "byte"])
def test_project_vocabularies_export_as_hf_tokenizers_with_the_same_ids(spec, tmp_path):
  vocab = load_vocabulary(spec)
  hf_vocabulary(vocab).save(str(tmp_path))
  for file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    assert (tmp_path / file).is_file(), file
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  back = load_hf_vocabulary(str(tmp_path), add_tokens=False)  # what init.from_hf reads
  assert len(tokenizer) == back.vocab_size == vocab.vocab_size
  assert back.special_ids == vocab.special_ids and back.added_ids == ()
  assert back.num_procedural == vocab.num_procedural
  assert list(back.procedural_id(np.arange(vocab.num_procedural))) == list(
      vocab.procedural_id(np.arange(vocab.num_procedural)))
  assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (
      vocab.pad_id, vocab.bos_id, vocab.eos_id)
  for name, i in vocab.special_ids.items():
    assert tokenizer.convert_ids_to_tokens(i) == vocab.decode([i]), name

  # Shipped text: every paragraph of a sample, encoded one by one and as one document.
  text = open(data_sources.shipped_text_path(), encoding="utf-8").read()
  sample = text if spec == "sentencepiece" else text[:100_000]
  paragraphs = [p + "\n\n" for p in sample.split("\n\n")]
  want = vocab.encode_batch(paragraphs)
  got = tokenizer(paragraphs, add_special_tokens=False)["input_ids"]
  mismatched = sum(a != b for a, b in zip(got, want))
  assert tokenizer(sample, add_special_tokens=False)["input_ids"] == vocab.encode(sample)
  assert tokenizer(paragraphs[0])["input_ids"] == [vocab.bos_id] + want[0]  # bos, as in training
  # Text that looks like a special token stays text, as in the project's encode.
  typed = "a <pause> b <|START_OF_LATENT|> <proc_3> <eos> \u2581 c"
  assert tokenizer(typed, add_special_tokens=False)["input_ids"] == vocab.encode(typed)

  # Math with thoughts (both layouts), the shipped text and procedural items, as the pipeline
  # builds them: the HF tokenizer gives the same example ids, and decodes them as the project.
  math = {"kind": "math", "thoughts": True, "train_size": 200, "validation_size": 10,
          "test_size": 10}
  sections = {"math": math, "shakespeare": {"kind": "text"},
              "dyck": {"kind": "procedural", "task": "dyck", "k": 16, "length": 64}}
  examples = 0
  for name, section in sections.items():
    project = _source_examples(vocab, name, section, 40)
    assert _source_examples(back, name, section, 40) == project, name
    for ids in project:
      assert tokenizer.decode(ids) == vocab.decode(ids), name
      examples += 1
  for ids in project:  # procedural symbols: by name and back
    assert tokenizer.convert_tokens_to_ids(tokenizer.convert_ids_to_tokens(ids)) == ids
  assert sum(vocab.sol_id in ids for ids in _source_examples(vocab, "math", math, 10)) == 10
  for paragraph, ids in zip(paragraphs, want):
    assert tokenizer.decode(ids) == vocab.decode(ids) == paragraph.replace("\u2581", " ")
  print(f"{spec}: {len(paragraphs)} paragraphs ({len(sample)} chars), {mismatched} mismatched; "
        f"{examples} pipeline examples identical")
  assert mismatched == 0


# The demo model, end to end ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
  """A few steps of configs/demo.py at test size: pondering (s = 1, scaled embeddings) GPT-NeoX,
  the shipped SentencePiece vocabulary, pauses, a Dyck warm-up, math with thoughts and text."""
  from ponder_jax.sweep import load_config  # pylint: disable=import-outside-toplevel
  from ponder_jax.train.trainer import build_trainer  # pylint: disable=import-outside-toplevel
  config = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "demo.py"))
  config.model.update(d_model=32, n_layers=2, n_heads=4, max_len=64)
  config.data.seq_len = 64
  config.data.sources.dyck.length = 64
  config.data.sources.math.update(train_size=200, validation_size=20, test_size=20)
  config.data.phases.warmup.steps = 1
  config.data.prefetch_batches = 0
  config.train.update(steps=3, global_batch_size=8, log_every=1, eval_every=0, eval_batches=1)
  if "eval_tasks" in config.train:  # generation-based evals: not what this test is about
    config.train.eval_tasks = ""
  config.checkpoint.update(every=0, async_save=False)
  config.metrics.update(tensorboard=False, progress_bar=False, plot=False)
  workdir = tmp_path_factory.mktemp("demo")
  trainer = build_trainer(config, str(workdir))
  trainer.run()
  assert trainer.exp.ponder.steps == 1 and trainer.exp.ponder.scale_embeds
  return config, trainer, str(workdir)


def test_demo_run_exports_with_its_tokenizer_and_pondering(demo_run, tmp_path):
  from ponder_jax.train import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  from ponder_jax.train.trainer import build_trainer  # pylint: disable=import-outside-toplevel
  config, trainer, workdir = demo_run
  out = tmp_path / "demo-hf"
  cli.main(["--to-hf", workdir, "--out", str(out)])  # no flags: the model and tokenizer as run
  params = ckpt_lib.load_params(workdir)
  model, ponder, vocab = trainer.model, trainer.exp.ponder, trainer.exp.vocab
  hf_config = json.loads((out / "config.json").read_text())
  assert hf_config["model_type"] == "ponder_gpt_neox" and hf_config["ponder_scale_embeds"]
  assert [hf_config[f"{n}_token_id"] for n in ("bos", "eos", "pad")] == [
      vocab.bos_id, vocab.eos_id, vocab.pad_id]

  # Real text through the exported tokenizer and model, against the project's on its own ids.
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(out), trust_remote_code=True)
  hf = load_remote(out)
  text = open(data_sources.shipped_text_path(), encoding="utf-8").read()
  lines = [text[i:i + 400] for i in (5_000, 400_000, 800_000)]
  ids = [[vocab.bos_id] + vocab.encode(line) for line in lines]
  assert tokenizer(lines)["input_ids"] == ids
  length = min(min(len(row) for row in ids), 64)
  tokens = np.asarray([row[:length] for row in ids], np.int32)
  want = ponder_logits(model, params, ponder, tokens)
  with torch.no_grad():
    got = hf(**tokenizer(lines, return_tensors="pt", truncation=True, max_length=length)).logits
  diff = float(np.abs(got.numpy() - want).max())
  plain = float(np.abs(our_logits(trainer.exp.model, params, tokens, np.ones_like(tokens))
                       - want).max())
  print(f"demo: max |logit diff| = {diff:.2e} on {tokens.shape} shipped-text tokens "
        f"(plain backbone: {plain:.2f})")
  assert diff <= TOL and plain > 100 * TOL

  prompt = tokens[:, :24]
  want_tokens = until_eos(greedy(model, params, ponder, prompt, GREEDY_NEW), vocab.eos_id)
  got_tokens = hf_greedy(hf, prompt, GREEDY_NEW)
  assert until_eos(got_tokens, vocab.eos_id) == want_tokens
  cached = cached_greedy(model, params, ponder, prompt, GREEDY_NEW, stop_tokens=[vocab.eos_id])
  assert cached in (None, want_tokens)
  print("demo greedy:", [tokenizer.decode(row[24:]) for row in got_tokens])

  # init.from_hf on the export: the same model config, ponder settings, vocabulary and params,
  # hence the same function to continue training from.
  again = config.copy_and_resolve_references()
  again.init.from_hf = str(out)
  again.ponder.update(dataclasses.asdict(read_ponder_config(out)))
  continued = build_trainer(again, str(tmp_path / "continued"))
  assert continued.exp.model == trainer.exp.model and continued.exp.ponder == ponder
  assert continued.exp.vocab.special_ids == vocab.special_ids
  assert continued.exp.vocab.vocab_size == vocab.vocab_size
  assert continued.exp.vocab.encode(lines[0]) == vocab.encode(lines[0])
  initial = jax.device_get(continued.init_state().params)
  jax.tree.map(np.testing.assert_array_equal, initial, params)
  np.testing.assert_allclose(
      ponder_logits(continued.model, initial, continued.exp.ponder, tokens), want, atol=1e-5)
