"""The grain pipeline end to end on real sources: config validation, mixture proportions, the phase
schedule and budgets, packing invariants, explicit long-document pieces, pause ratio and weights,
orbax resume across a phase switch, eval streams, global arrays, and two real processes reading
disjoint slices of one stream."""

import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from ponder_jax.config import ConfigError
from ponder_jax.batch import FIELDS
from ponder_jax.data import pipeline
from ponder_jax.data.sources import source_config
from ponder_jax.data.vocab import ByteVocabulary, load_vocabulary

VOCAB = ByteVocabulary()
SEQ = 64
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_docs(path, n, tag="doc", extra=""):
  """n unique short documents separated by blank lines; returns their texts."""
  docs = [f"{tag} {i:03d} {extra}".strip() for i in range(n)]
  path.write_text("\n\n".join(docs) + "\n")
  return docs


def _config(tmp_path, *, docs=200, phases=None, order="main", pause_ratio=0.0, **sources):
  cfg = pipeline.default_data_config()
  cfg.vocab = "byte"
  cfg.seq_len = SEQ
  text = tmp_path / "text.txt"
  if not text.exists():
    _write_docs(text, docs)
  cfg.sources = {"text": source_config("text", path=str(text), eval_fraction=0.1), **sources}
  cfg.phases = phases or {"main": pipeline.phase_config(0, text=1.0)}
  cfg.phase_order = order
  cfg.pause.ratio = pause_ratio
  return cfg


def _segments(batch):
  """(row, segment id, source id, tokens, loss_mask) of every segment of a batch."""
  out = []
  for row in range(batch["tokens"].shape[0]):
    seg = batch["segment_ids"][row]
    for s in np.unique(seg[seg > 0]):
      where = seg == s
      out.append((row, int(s), np.unique(batch["source_id"][row][where]),
                  batch["tokens"][row][where], batch["loss_mask"][row][where]))
  return out


def _text_of(tokens):
  return VOCAB.decode([t for t in tokens if t not in (VOCAB.bos_id, VOCAB.eos_id)])


# Config -------------------------------------------------------------------------------------


def test_default_config_validates():
  cfg = pipeline.default_data_config()
  spec = pipeline.validate_data_config(cfg)
  assert pipeline.source_names(cfg) == ["shakespeare"]
  assert spec.schedule() == [(0, 0, None)]
  assert pipeline.total_train_steps(cfg, 100) == 100


@pytest.mark.parametrize("edit, key", [
    (lambda c: c.phases.main.weights.update(text=0.0), "data.phases.main.weights.text"),
    (lambda c: c.phases.main.weights.update(text=-2.0), "data.phases.main.weights.text"),
    (lambda c: c.phases.main.weights.update(nosuch=1.0), "data.phases.main.weights.nosuch"),
    (lambda c: c.phases.main.update(steps=10), "data.phases.main.steps"),
    (lambda c: c.update(phase_order="main,warm"), "data.phase_order"),
    (lambda c: c.update(budget="both"), "data.budget"),
    (lambda c: c.pause.update(ratio=1.5), "data.pause.ratio"),
    (lambda c: c.packing.update(algorithm="greedy"), "data.packing.algorithm"),
    (lambda c: c.update(seq_len=1), "data.seq_len"),
    (lambda c: c.sources.text.update(kind="csv"), "data.sources.text.kind"),
])
def test_bad_config_names_the_key(tmp_path, edit, key):
  cfg = _config(tmp_path)
  edit(cfg)
  with pytest.raises(ConfigError, match=f"'{key}'"):
    pipeline.validate_data_config(cfg)


def test_unknown_top_level_key(tmp_path):
  cfg = _config(tmp_path).to_dict()
  cfg["seqlen"] = 5
  with pytest.raises(ConfigError, match="'data.seqlen'"):
    pipeline.validate_data_config(cfg)


def test_budgets(tmp_path):
  phases = {"warm": pipeline.phase_config(30, dyck=1.0),
            "skipped": pipeline.phase_config(0, text=1.0),
            "main": pipeline.phase_config(0, text=1.0)}
  cfg = _config(tmp_path, phases=phases, order="warm,skipped,main",
                dyck=source_config("procedural", task="dyck", length=16))
  spec = pipeline.validate_data_config(cfg)
  assert spec.schedule() == [(0, 0, 30), (2, 30, None)]
  assert pipeline.total_train_steps(cfg, 100) == 130
  cfg.budget = "substitutive"
  assert pipeline.total_train_steps(cfg, 100) == 100
  with pytest.raises(ConfigError, match="'data.budget'"):
    pipeline.total_train_steps(cfg, 30)


# Batches ------------------------------------------------------------------------------------


def _mixture(tmp_path, **kw):
  """Procedural + text + thought-augmented math, weights 1 : 2 : 1 by document."""
  return _config(
      tmp_path, docs=400,
      phases={"main": pipeline.phase_config(0, text=2.0, sort=1.0, math=1.0)},
      sort=source_config("procedural", task="sort", length=6, vocab=30),
      math=source_config("math"), **kw)


def test_batches_are_packed_consistently(tmp_path):
  cfg = _mixture(tmp_path)
  names = pipeline.source_names(cfg)
  it = pipeline.make_train_iterator(cfg, VOCAB, global_batch_size=8)
  texts = set(_write_docs(tmp_path / "unused.txt", 400))
  math_tokens = []
  for _ in range(6):
    batch = next(it)
    assert sorted(batch) == sorted(FIELDS)
    assert all(v.shape == (8, SEQ) and v.dtype == np.int32 for v in batch.values())
    seg, pos = batch["segment_ids"], batch["positions"]
    pad = seg == 0
    assert (batch["tokens"][pad] == VOCAB.pad_id).all() and not batch["loss_mask"][pad].any()
    assert (batch["source_id"][pad] == -1).all() and not pos[pad].any()
    for row in range(8):
      used = seg[row][~pad[row]]
      # Segments 1..k, contiguous, padding only at the end.
      assert (np.diff(used) >= 0).all() and (np.diff(used) <= 1).all() and used[0] == 1
      assert not pad[row][:used.size].any()
      # Positions count from 0 within every segment.
      for s in np.unique(used):
        np.testing.assert_array_equal(pos[row][seg[row] == s], np.arange((seg[row] == s).sum()))
    for _, _, source_ids, tokens, loss_mask in _segments(batch):
      assert source_ids.size == 1  # one source per segment
      name = names[source_ids[0]]
      if name == "text":
        assert tokens[0] == VOCAB.bos_id and tokens[-1] == VOCAB.eos_id
        assert _text_of(tokens) in texts and loss_mask.all()
      elif name == "math":
        # Word problems with thoughts outgrow 64 tokens: every piece but a document's last
        # (the one with eos) fills its row; pieces without bos continue a document.
        assert tokens[-1] == VOCAB.eos_id or tokens.size == SEQ
        assert loss_mask.all()
        math_tokens.append(tokens)
      else:  # sort: procedural ids, loss on the 6 sorted outputs only
        assert (tokens >= 9).all() and (tokens < 9 + 256).all()
        assert loss_mask.sum() == 6 and loss_mask[-6:].all()
  math_tokens = np.concatenate(math_tokens)
  assert {VOCAB.sol_id, VOCAB.prior_id, VOCAB.eol_id} <= set(math_tokens.tolist())


def test_mixture_follows_the_weights(tmp_path):
  cfg = _mixture(tmp_path)
  names = pipeline.source_names(cfg)
  it = pipeline.make_train_iterator(cfg, VOCAB, global_batch_size=16)
  counts = dict.fromkeys(names, 0)
  for _ in range(25):
    for _, _, source_ids, _, _ in _segments(next(it)):
      counts[names[source_ids[0]]] += 1
  total = sum(counts.values())
  assert total > 1000
  for name, weight in (("text", 0.5), ("sort", 0.25), ("math", 0.25)):
    assert abs(counts[name] / total - weight) < 0.02, counts


def test_schedule_switches_at_the_configured_step(tmp_path):
  phases = {"warm": pipeline.phase_config(5, dyck=1.0), "main": pipeline.phase_config(0, text=1.0)}
  cfg = _config(tmp_path, phases=phases, order="warm,main",
                dyck=source_config("procedural", task="dyck", length=40))
  names = pipeline.source_names(cfg)
  it = pipeline.make_train_iterator(cfg, VOCAB, global_batch_size=4)
  seen = []
  for step in range(9):
    assert it.step == step
    batch = next(it)
    seen.append({names[i] for i in np.unique(batch["source_id"]) if i >= 0})
  assert seen == [{"dyck"}] * 5 + [{"text"}] * 4
  assert it.phase_name == "main"


def test_a_later_phase_continues_a_shared_source(tmp_path):
  phases = {"a": pipeline.phase_config(4, text=1.0, dyck=1.0),
            "b": pipeline.phase_config(0, text=1.0)}
  cfg = _config(tmp_path, docs=400, phases=phases, order="a,b",
                dyck=source_config("procedural", task="dyck", length=20))
  text_id = pipeline.source_names(cfg).index("text")
  it = pipeline.make_train_iterator(cfg, VOCAB, global_batch_size=4)
  read = [{_text_of(t) for _, _, s, t, _ in _segments(next(it)) if s[0] == text_id}
          for _ in range(8)]
  in_a, in_b = set().union(*read[:4]), set().union(*read[4:])
  assert in_a and in_b and not in_a & in_b


def test_long_documents_become_explicit_pieces(tmp_path):
  path = tmp_path / "long.txt"
  long_doc = "L" + "".join(chr(97 + i % 26) for i in range(149))
  path.write_text("\n\n".join(["short one", long_doc, "short two"]))
  cfg = _config(tmp_path)
  cfg.sources.text.path, cfg.sources.text.eval_fraction = str(path), 0.0
  stream = iter(pipeline.source_stream(cfg, VOCAB, "text"))
  examples = [next(stream)["tokens"].tolist() for _ in range(5)]  # the first epoch: 3 + 2 pieces
  pieces = [e for e in examples if "short" not in _text_of(e)]
  # Every piece is its own example (segment); the first starts with bos, only the last ends
  # with eos, and in order they are the document exactly.
  assert [len(p) for p in pieces] == [64, 64, 24]
  assert sum(pieces, []) == [VOCAB.bos_id, *VOCAB.encode(long_doc), VOCAB.eos_id]
  assert [p[0] == VOCAB.bos_id for p in pieces] == [True, False, False]
  assert [p[-1] == VOCAB.eos_id for p in pieces] == [False, False, True]
  # Packed, a full-length piece fills a row by itself.
  it = pipeline.make_train_iterator(cfg, VOCAB, global_batch_size=4)
  rows = [row for _ in range(4) for row in _segments(next(it))]
  assert any(len(t) == 64 and t[0] != VOCAB.bos_id for _, _, _, t, _ in rows)
  cfg.packing.split_long = False
  it = pipeline.make_train_iterator(cfg, VOCAB, global_batch_size=4)
  with pytest.raises(ValueError, match=r"data.sources.text: .* 152 tokens, more than "
                                       r"data.seq_len = 64, and data.packing.split_long"):
    for _ in range(4):
      next(it)


def _varied_docs(path, n, seed=0):
  """n unique documents of 1 to 80 words (8 to ~500 bytes), blank-line separated."""
  rng = np.random.default_rng(seed)
  docs = [f"doc {i:03d} " + " ".join("w" * int(rng.integers(1, 6))
                                     for _ in range(int(rng.integers(1, 80)))) for i in range(n)]
  path.write_text("\n\n".join(docs) + "\n")
  return docs


@pytest.mark.parametrize("ratio", [0.1, 0.3])
def test_pause_fraction_of_packed_rows_and_no_pause_target_is_weighted(tmp_path, ratio):
  """Pauses are `ratio` of the non-padding tokens of the text and math rows (to 1 percentage
  point, whatever the document lengths); the procedural source gets none by default."""
  from ponder_jax.loss import target_weights
  cfg = _config(tmp_path, pause_ratio=ratio, phases={"main": pipeline.phase_config(
      0, text=2.0, math=1.0, sort=1.0)}, sort=source_config("procedural", task="sort", length=6,
                                                            vocab=30),
      math=source_config("math"))
  cfg.sources.text.path = str(tmp_path / "varied.txt")
  _varied_docs(tmp_path / "varied.txt", 300)
  names = pipeline.source_names(cfg)
  it = pipeline.make_train_iterator(cfg, VOCAB, global_batch_size=8)
  pauses = real = sort_tokens = 0
  for _ in range(40):
    batch = next(it)
    pause_target = batch["tokens"][:, 1:] == VOCAB.pause_id
    for pause_id in (None, VOCAB.pause_id):
      assert not np.asarray(target_weights(batch, pause_id))[pause_target].any()
    for _, _, source_ids, tokens, loss_mask in _segments(batch):
      is_pause = tokens == VOCAB.pause_id
      if names[source_ids[0]] == "sort":
        assert not is_pause.any()  # procedural: no pauses by default
        sort_tokens += tokens.size
      else:
        assert not loss_mask[is_pause].any()
        pauses, real = pauses + int(is_pause.sum()), real + tokens.size
  assert pauses > 1000 and sort_tokens > 1000
  assert abs(pauses / real - ratio) < 0.01, pauses / real


def test_an_explicit_override_puts_pauses_into_a_procedural_source(tmp_path):
  cfg = _config(tmp_path, pause_ratio=0.2, phases={"main": pipeline.phase_config(0, sort=1.0)},
                sort=source_config("procedural", task="sort", length=12, vocab=30, pause=True))
  batch = next(pipeline.make_train_iterator(cfg, VOCAB, global_batch_size=8))
  used = batch["segment_ids"] > 0
  assert abs((batch["tokens"][used] == VOCAB.pause_id).mean() - 0.2) < 0.05
  # The output span is still all there: 12 targets per item, none of them a pause.
  for _, _, _, tokens, loss_mask in _segments(batch):
    assert loss_mask.sum() == 12 and not (tokens[loss_mask > 0] == VOCAB.pause_id).any()


def _documents(cfg, name, n):
  """The first n documents of a source's train stream, their pieces joined."""
  docs, stream = {}, iter(pipeline.source_stream(cfg, VOCAB, name))
  while len(docs) <= n:
    item = next(stream)
    docs.setdefault(int(item["doc_index"]), []).append(item)
  return [{k: np.concatenate([p[k] for p in docs[g]]) for k in ("tokens", "loss_mask")}
          for g in sorted(docs)[:n]]


def test_pause_insertion_keeps_every_document_whole(tmp_path):
  """Every document keeps every token in order and its eos; grown documents longer than a row
  are cut into pieces like any long document."""
  docs = _varied_docs(tmp_path / "varied.txt", 300)
  cfg = _config(tmp_path, pause_ratio=0.3)
  cfg.sources.text.update(path=str(tmp_path / "varied.txt"), eval_fraction=0.0)
  plain = dict(cfg.to_dict(), pause={"ratio": 0.0, "in_eval": False})
  with_pauses, without = _documents(cfg, "text", 300), _documents(plain, "text", 300)
  for grown, doc in zip(with_pauses, without):
    real = grown["tokens"] != VOCAB.pause_id
    np.testing.assert_array_equal(grown["tokens"][real], doc["tokens"])
    np.testing.assert_array_equal(grown["loss_mask"][real], doc["loss_mask"])
    assert grown["tokens"][-1] == VOCAB.eos_id and grown["tokens"][0] == VOCAB.bos_id
  assert sorted(_text_of(d["tokens"]) for d in without) == sorted(docs)
  assert sum(d["tokens"].size for d in with_pauses) > 1.3 * sum(d["tokens"].size for d in without)


@pytest.mark.parametrize("prior_prob", [1.0, 0.0])
def test_math_answers_survive_pauses_in_both_thought_layouts(tmp_path, prior_prob):
  """Prior form `Q <SoL><PRIOR> Z <EoL> A` ends with the answer, posterior form `Q <SoL><EoL> A
  <SoL><POSTERIOR> Z <EoL>` with the thought: with pauses removed, every document is whole."""
  import re
  from ponder_jax.data import math_corpus
  cfg = _config(tmp_path, pause_ratio=0.2, phases={"main": pipeline.phase_config(0, math=1.0)},
                math=source_config("math", train_size=200, prior_prob=prior_prob))
  texts = {r["text"]: r for r in (math_corpus.MathCorpus(
      math_corpus.MathCorpusConfig(train_size=200), "train")[i] for i in range(200))}
  docs = _documents(cfg, "math", 200)
  assert sum(int((d["tokens"] == VOCAB.pause_id).sum()) for d in docs) > 500
  latent = re.escape(VOCAB.decode([VOCAB.sol_id])) + ".*?" + re.escape(
      VOCAB.decode([VOCAB.eol_id]))
  for doc in docs:
    tokens = doc["tokens"][doc["tokens"] != VOCAB.pause_id]
    assert tokens[0] == VOCAB.bos_id and tokens[-1] == VOCAB.eos_id
    text = VOCAB.decode(tokens[1:-1])
    record = texts[re.sub(latent, "", text)]  # the observed text: question + answer, whole
    before_eos = VOCAB.decode(tokens[-1 - len(VOCAB.encode(record["answer_text"])):-1])
    if prior_prob == 1.0:
      assert before_eos == record["answer_text"]
      assert VOCAB.decode([VOCAB.prior_id]) in text
    else:
      assert VOCAB.decode([VOCAB.posterior_id]) in text
      assert text.endswith(record["thought"] + VOCAB.decode([VOCAB.eol_id]))


# Finetune rows ------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [0, 5])
def test_finetune_rows_prompt_pauses_target_and_target_weights(tmp_path, m):
  """PauseFT rows through packing: bos, prompt, exactly M pauses, target, eos; the loss weight is
  1 exactly where the *target* token is an answer token or eos. Inserted pauses never apply to a
  finetune source (data.pause.ratio > 0 here)."""
  from ponder_jax.loss import target_weights
  cfg = _config(tmp_path, pause_ratio=0.3, phases={"main": pipeline.phase_config(0, ft=1.0)},
                ft=source_config("finetune", generator="math", num_pauses=m,
                                 kinds=("multiplication", "addition", "linear_equation")))
  it = pipeline.make_train_iterator(cfg, VOCAB, global_batch_size=8)
  questions = 0
  for _ in range(3):
    batch = next(it)
    want = np.zeros(batch["tokens"].shape, bool)  # token t is a target-span token
    for row, segment, _, tokens, loss_mask in _segments(batch):
      is_pause = np.flatnonzero(tokens == VOCAB.pause_id)
      text = VOCAB.decode(tokens)
      assert tokens[0] == VOCAB.bos_id and tokens[-1] == VOCAB.eos_id
      question = re.match(r"<bos>(Solve .*?\.|.*?=)", text).group(1)
      start = 1 + len(VOCAB.encode(question))  # the first pause (or target) position
      np.testing.assert_array_equal(is_pause, np.arange(start, start + m))
      np.testing.assert_array_equal(loss_mask, np.arange(tokens.size) >= start + m)
      where = np.flatnonzero(batch["segment_ids"][row] == segment)
      want[row, where[start + m:]] = True
      questions += 1
    weights = np.asarray(target_weights(batch, VOCAB.pause_id))
    np.testing.assert_array_equal(weights, want[:, 1:].astype(np.float32))
  assert questions > 40


def test_finetune_m0_is_standard_finetuning(tmp_path):
  """The M = 0 stream is the M = 10 stream with its pauses removed, item for item."""
  def stream(m):
    cfg = _config(tmp_path, phases={"main": pipeline.phase_config(0, ft=1.0)},
                  ft=source_config("finetune", generator="math", num_pauses=m, train_size=50,
                                   kinds=("multiplication", "linear_equation")))
    it = iter(pipeline.source_stream(cfg, VOCAB, "ft"))
    return [next(it) for _ in range(50)]
  for paused, std in zip(stream(10), stream(0)):
    keep = paused["tokens"] != VOCAB.pause_id
    assert (~keep).sum() == 10
    for key in ("tokens", "loss_mask"):
      np.testing.assert_array_equal(paused[key][keep], std[key])


def test_finetune_eval_and_too_long_examples(tmp_path):
  cfg = _config(tmp_path, phases={"main": pipeline.phase_config(0, ft=1.0)},
                ft=source_config("finetune", generator="math", num_pauses=2,
                                 kinds=("multiplication",), validation_size=12))
  ev = pipeline.make_eval_iterators(cfg, VOCAB, global_batch_size=4, num_batches=2)
  segments = [seg for b in ev["ft"] for seg in _segments(b)]
  assert len(segments) == 12
  assert all((t == VOCAB.pause_id).sum() == 2 and m.sum() > 1 for _, _, _, t, m in segments)
  cfg.sources.ft.num_pauses = 60  # 60 pauses + a question do not fit a 64-token row
  with pytest.raises(ValueError, match=r"data.sources.ft: .* more than data.seq_len = 64, and a "
                                       r"finetune example is never cut"):
    next(pipeline.make_train_iterator(cfg, VOCAB, global_batch_size=4))


# Checkpoints ----------------------------------------------------------------------------------


def _orbax_manager(directory):
  import grain
  import orbax.checkpoint as ocp
  return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=3),
                               item_handlers={"ds": grain.checkpoint.CheckpointHandler()})


def test_orbax_resume_is_exact_across_a_phase_switch(tmp_path):
  import grain
  import orbax.checkpoint as ocp
  phases = {"warm": pipeline.phase_config(3, dyck=1.0),
            "main": pipeline.phase_config(0, text=2.0, math=1.0)}
  cfg = _config(tmp_path, phases=phases, order="warm,main", pause_ratio=0.1,
                dyck=source_config("procedural", task="dyck", length=30),
                math=source_config("math"))
  it = pipeline.make_train_iterator(cfg, VOCAB, global_batch_size=4)
  manager = _orbax_manager(tmp_path / "ckpt")
  stream = []
  for step in range(8):
    if step in (2, 5):
      manager.save(step, args=ocp.args.Composite(ds=grain.checkpoint.CheckpointSave(it)))
    stream.append(next(it))
  manager.wait_until_finished()
  for step in (2, 5):
    fresh = pipeline.make_train_iterator(cfg, VOCAB, global_batch_size=4)
    manager.restore(step, args=ocp.args.Composite(ds=grain.checkpoint.CheckpointRestore(fresh)))
    assert fresh.step == step
    for expected in stream[step:]:
      got = next(fresh)
      for key in FIELDS:
        np.testing.assert_array_equal(got[key], expected[key])
  manager.close()


def test_state_is_json_and_set_state_rewinds(tmp_path):
  import json
  cfg = _mixture(tmp_path)
  it = pipeline.make_train_iterator(cfg, VOCAB, global_batch_size=4)
  next(it)
  state = json.loads(json.dumps(it.get_state()))
  a = [next(it)["tokens"] for _ in range(3)]
  it.set_state(state)
  np.testing.assert_array_equal(np.stack(a), np.stack([next(it)["tokens"] for _ in range(3)]))


# Eval -----------------------------------------------------------------------------------------


def test_eval_iterators_are_held_out_deterministic_and_finite(tmp_path):
  cfg = _config(tmp_path, phases={"main": pipeline.phase_config(0, text=1.0, sort=1.0)},
                sort=source_config("procedural", task="sort", length=6, vocab=30, eval_items=40))
  ev = pipeline.make_eval_iterators(cfg, VOCAB, global_batch_size=4, num_batches=6)
  again = pipeline.make_eval_iterators(cfg, VOCAB, global_batch_size=4, num_batches=6)
  assert sorted(ev) == ["sort", "text"] and all(len(b) == 6 for b in ev.values())
  for name in ev:
    for x, y in zip(ev[name], again[name]):
      for key in FIELDS:
        np.testing.assert_array_equal(x[key], y[key])
  docs = _write_docs(tmp_path / "unused.txt", 200)
  eval_texts = [_text_of(t) for b in ev["text"] for _, _, _, t, _ in _segments(b)]
  assert eval_texts == docs[180:]  # the held-out tail, in order, once
  assert not ev["text"][-1]["segment_ids"].any()  # padding batches once the tail runs out
  train = pipeline.make_train_iterator(cfg, VOCAB, global_batch_size=4)
  train_texts = {_text_of(t) for _ in range(20) for _, _, _, t, _ in _segments(next(train))}
  assert train_texts and not train_texts & set(eval_texts)
  sort_eval = {tuple(t) for b in ev["sort"] for _, _, _, t, _ in _segments(b)}
  assert len(sort_eval) == 40


# Global arrays --------------------------------------------------------------------------------


def test_make_global_batch_on_a_simulated_mesh(tmp_path):
  import jax
  from ponder_jax.sharding import make_global_batch, make_mesh
  mesh = make_mesh({"data": 4, "fsdp": 2})
  batch = next(pipeline.make_train_iterator(_config(tmp_path), VOCAB, global_batch_size=8))
  arrays = make_global_batch(batch, mesh)
  for key, value in arrays.items():
    assert value.shape == (8, SEQ) and len(value.sharding.device_set) == 8
    assert value.sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"), None)
    np.testing.assert_array_equal(np.asarray(value), batch[key])
  with pytest.raises(ValueError, match="do not divide"):
    make_global_batch({k: v[:6] for k, v in batch.items()}, mesh)


def test_sentencepiece_end_to_end(tmp_path):
  vocab = load_vocabulary("sentencepiece")
  cfg = pipeline.default_data_config()
  cfg.pause.ratio = 0.1
  batch = next(pipeline.make_train_iterator(cfg, vocab, global_batch_size=4))
  text = vocab.decode(batch["tokens"][0])
  assert "<bos>" in text and "<pause>" in text and (batch["segment_ids"] > 0).mean() > 0.9
  assert batch["tokens"].max() < vocab.vocab_size


# Two processes --------------------------------------------------------------------------------

_STREAM_ITEMS = 30
_BATCHES = 5


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _worker(process_id, port, text_path, out_dir):
  """One host of a two-process run: its stream slice, its batches and the global batch."""
  import jax
  import ml_collections
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                             process_id=process_id)
  from jax.experimental import multihost_utils
  from ponder_jax.sharding import make_global_batch, make_mesh
  cfg = ml_collections.ConfigDict(_two_process_config(text_path))
  stream = iter(pipeline.source_stream(cfg, VOCAB, "text", process_index=process_id,
                                       process_count=2))
  items = [next(stream) for _ in range(_STREAM_ITEMS)]
  it = pipeline.make_train_iterator(cfg, VOCAB, global_batch_size=8, process_index=process_id,
                                    process_count=2)
  batches = [next(it) for _ in range(_BATCHES)]
  mesh = make_mesh({"data": -1})
  global_batch = make_global_batch(batches[0], mesh)
  gathered = multihost_utils.process_allgather(global_batch["tokens"], tiled=True)
  total = jax.jit(lambda t: t.astype(np.int64).sum())(global_batch["tokens"])
  np.savez(os.path.join(out_dir, f"host{process_id}.npz"),
           doc_index=np.array([e["doc_index"] for e in items]),
           item_tokens=np.array([np.pad(e["tokens"], (0, SEQ - e["tokens"].size),
                                        constant_values=-1) for e in items]),
           batch_tokens=np.stack([b["tokens"] for b in batches]),
           batch_segments=np.stack([b["segment_ids"] for b in batches]),
           global_shape=np.array(global_batch["tokens"].shape), gathered=np.asarray(gathered),
           total=np.asarray(total))
  jax.distributed.shutdown()


def _two_process_config(text_path):
  cfg = pipeline.default_data_config().to_dict()
  cfg.update(vocab="byte", seq_len=SEQ)
  cfg["sources"] = {"text": source_config("text", path=text_path, eval_fraction=0.0).to_dict()}
  cfg["phases"] = {"main": {"steps": 0, "weights": {"text": 1.0}}}
  return cfg


def test_two_processes_read_disjoint_slices_of_one_stream(tmp_path):
  text_path = tmp_path / "docs.txt"
  docs = _write_docs(text_path, 300)
  port = _free_port()
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
         "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
  procs = [subprocess.Popen([sys.executable, __file__, str(i), str(port), str(text_path),
                             str(tmp_path)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT) for i in range(2)]
  outputs = [p.communicate(timeout=180)[0].decode() for p in procs]
  for p, output in zip(procs, outputs):
    assert p.returncode == 0, output[-3000:]
  hosts = [np.load(tmp_path / f"host{i}.npz") for i in range(2)]

  # The one-process stream, item by item: host h's j-th item is item 2j + h.
  import ml_collections
  cfg = ml_collections.ConfigDict(_two_process_config(str(text_path)))
  one = iter(pipeline.source_stream(cfg, VOCAB, "text"))
  single = [next(one) for _ in range(2 * _STREAM_ITEMS)]
  for h, host in enumerate(hosts):
    np.testing.assert_array_equal(host["doc_index"], np.arange(h, 2 * _STREAM_ITEMS, 2))
    for j, tokens in enumerate(host["item_tokens"]):
      np.testing.assert_array_equal(tokens[tokens >= 0], single[2 * j + h]["tokens"])
  assert sorted(np.concatenate([h["doc_index"] for h in hosts])) == list(range(2 * _STREAM_ITEMS))

  # Through mixing and packing, each host's batches hold documents of its own slice only.
  one_process_slots = {}
  more = iter(pipeline.source_stream(cfg, VOCAB, "text"))
  for g in range(len(docs)):  # first epoch: every document once
    one_process_slots[_text_of(next(more)["tokens"])] = g % 2
  read = []
  for h, host in enumerate(hosts):
    texts = set()
    for tokens_b, seg_b in zip(host["batch_tokens"], host["batch_segments"]):
      for tokens, seg in zip(tokens_b, seg_b):
        for s in np.unique(seg[seg > 0]):
          texts.add(_text_of(tokens[seg == s]))
    assert texts and all(one_process_slots[t] == h for t in texts)
    read.append(texts)
  assert not read[0] & read[1]

  # The global batch: 8 rows over 4 devices in 2 processes, host 0's rows first.
  for host in hosts:
    assert tuple(host["global_shape"]) == (8, SEQ)
    np.testing.assert_array_equal(host["gathered"][:4], hosts[0]["batch_tokens"][0])
    np.testing.assert_array_equal(host["gathered"][4:], hosts[1]["batch_tokens"][0])
    assert int(host["total"]) == int(hosts[0]["batch_tokens"][0].sum()
                                     + hosts[1]["batch_tokens"][0].sum())


if __name__ == "__main__":  # a worker of test_two_processes_read_disjoint_slices_of_one_stream
  _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
