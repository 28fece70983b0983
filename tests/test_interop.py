"""TFDS and seqio interop: datasets built offline to ArrayRecord and read back with
`tfds.data_source`, and seqio tasks over the same sources, give exactly the native sources'
tokens and loss masks for the same seed; a built dataset flows through the grain pipeline by
its `tfds` source kind; bad input fails naming the key.

Only the two seqio tests load TensorFlow (seconds of import); TFDS reads without it.
"""

import importlib
import os

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from ponder_jax.config import ConfigError  # noqa: E402
from ponder_jax.data import (  # noqa: E402
    math_corpus, pipeline, procedural, sources, tfds_builders, tfds_records, thoughts)
from ponder_jax.data.vocab import default_tokenizer_path, load_vocabulary  # noqa: E402

tfds.disable_progress_bar()
VOCAB = load_vocabulary("sentencepiece")
SEED = 7  # thought forms of item i: default_rng([SEED, i]), as the seqio tasks draw them
DYCK = sources.source_config("procedural", task="dyck", seed=11, num_items=48, eval_items=12,
                             length=64, k=8)
MATH = sources.source_config("math", seed=3, train_size=40, validation_size=12, test_size=12,
                             prior_prob=0.5)


def _native(section, split="train", name="native"):
  return sources.open_source(sources.validate_source(name, section), VOCAB, split)


def _rng(index):
  return np.random.default_rng([SEED, index])


def _write_thought_records(path):
  """Thought records of real paragraphs from the shipped text, chunked as the E-step does,
  with a thought on every other chunk (unicode included); returns the documents."""
  with open(sources.shipped_text_path(), encoding="utf-8") as f:
    paragraphs = [p for p in thoughts.split_paragraphs(f.read()) if p.count(". ") >= 3][:24]
  documents = []
  for doc_index, text in enumerate(paragraphs):
    chunks = thoughts.chunk_document(text, mean_sentences=2, max_sentences=3)
    documents.append((f"shakespeare/{doc_index}", [
        (chunk, f"gist {doc_index}.{i}: ‘{chunk[:12]}’" if i % 2 == 0 else None)
        for i, chunk in enumerate(chunks)]))
  thoughts.write_thought_records(path, documents)
  return documents


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """One data_dir holding a procedural task, the math corpus and thought-augmented text."""
  root = tmp_path_factory.mktemp("interop")
  data_dir = str(root / "tfds")
  jsonl = root / "thoughts.jsonl"
  documents = _write_thought_records(jsonl)
  thought_section = sources.source_config("thoughts", path=str(jsonl), eval_fraction=0.25)
  return {
      "data_dir": data_dir, "documents": documents, "thought_section": thought_section,
      "dyck": tfds_builders.build(DYCK, data_dir, name="dyck_k8"),
      "math": tfds_builders.build(MATH, data_dir),
      "thoughts": tfds_builders.build(thought_section, data_dir),
  }


def _assert_same_examples(expected, actual):
  assert len(expected) == len(actual) > 0
  for i, (want, got) in enumerate(zip(expected, actual)):
    for key in ("tokens", "loss_mask"):
      assert want[key].dtype == got[key].dtype == np.int32, (i, key)
      np.testing.assert_array_equal(want[key], got[key], err_msg=f"item {i} {key}")


# TFDS ------------------------------------------------------------------------------------------


def test_procedural_build_reads_back_the_native_tokens(built):
  assert built["dyck"] == "ponder_procedural/dyck_k8"
  for split, tfds_split in (("train", "train"), ("eval", "validation")):
    native = _native(DYCK, split)
    records = tfds_records.TfdsRecords(built["dyck"], tfds_split, data_dir=built["data_dir"],
                                       layout="procedural", key="data.sources.warmup")
    assert len(records) == len(native) == {"train": 48, "eval": 12}[split]
    _assert_same_examples([native.example(native[i], None) for i in range(len(native))],
                          [native.example((i, records[i]), None) for i in range(len(records))])
  assert records.num_symbols == 2 * 8  # k bracket types, open and close
  # The records are real, varied Dyck words with the native mask, not one repeated item.
  first, second = records[0], records[1]
  assert not np.array_equal(first["tokens"], second["tokens"])
  assert first["loss_mask"].tolist() == [0] + [1] * 63


def test_tfds_source_kind_reads_procedural_and_thought_layouts(built):
  """The pipeline's own `tfds` kind opens builder datasets like the native sources."""
  dyck = sources.source_config("tfds", name=built["dyck"], data_dir=built["data_dir"],
                               layout="procedural", eval_split="validation")
  native, via_tfds = _native(DYCK), _native(dyck, name="warmup")
  _assert_same_examples([native.example(native[i], None) for i in range(8)],
                        [via_tfds.example(via_tfds[i], None) for i in range(8)])
  text = sources.source_config("tfds", name=built["thoughts"], data_dir=built["data_dir"],
                               layout="thoughts")
  native, via_tfds = _native(built["thought_section"]), _native(text, name="text")
  _assert_same_examples([native.example(native[i], _rng(i)) for i in range(6)],
                        [via_tfds.example(via_tfds[i], _rng(i)) for i in range(6)])
  with pytest.raises(ConfigError, match="layout"):
    sources.validate_source("bad", sources.source_config("tfds", name="x", layout="rows"))


def test_math_build_has_every_split_and_the_native_thought_layout(built):
  data_dir = built["data_dir"]
  config = math_corpus.MathCorpusConfig.from_config(
      {k: v for k, v in MATH.items() if k not in ("kind", "pause", "thoughts", "prior_prob")})
  for split, native_split in (("train", "train"), ("validation", "eval")):
    native = _native(MATH, native_split)
    records = tfds_records.TfdsRecords(built["math"], split, data_dir=data_dir,
                                       layout="thoughts")
    _assert_same_examples(
        [native.example(native[i], _rng(i)) for i in range(len(native))],
        [native.example((i, records[i]), _rng(i)) for i in range(len(records))])
  # Every stored field of the test split is the corpus record's, in order.
  test = tfds.data_source(built["math"], split="test", data_dir=data_dir)
  corpus = math_corpus.MathCorpus(config, "test")
  assert len(test) == len(corpus) == 12
  for i in range(len(corpus)):
    record, stored = corpus[i], test[i]
    for key in ("kind", "question", "answer", "answer_text", "thought", "text"):
      assert stored[key].decode() == record[key]
    assert math_corpus.verify({k: stored[k].decode() for k in ("kind", "question", "answer",
                                                               "thought")})


def test_thought_text_build_matches_the_thought_record_source(built):
  section, data_dir = built["thought_section"], built["data_dir"]
  documents = [chunks for _, chunks in built["documents"]]
  assert built["thoughts"] == "ponder_thoughts/thoughts"
  for split, native_split, expected in (("train", "train", documents[:18]),
                                        ("validation", "eval", documents[18:])):
    native = _native(section, native_split)
    records = tfds_records.TfdsRecords(built["thoughts"], split, data_dir=data_dir,
                                       layout="thoughts")
    assert [records[i] for i in range(len(records))] == expected  # None thoughts stay None
    _assert_same_examples(
        [native.example(native[i], _rng(i)) for i in range(len(native))],
        [native.example((i, records[i]), _rng(i)) for i in range(len(records))])
  # Thoughts appear in both forms somewhere, so the layout really drew per chunk.
  tokens = np.concatenate([native.example(native[i], _rng(i))["tokens"]
                           for i in range(len(native))])
  assert {VOCAB.prior_id, VOCAB.posterior_id} <= set(tokens.tolist())
  # The `text` feature is the whole document: the pipeline's tfds kind reads it as plain text.
  plain = _native(sources.source_config("tfds", name=built["thoughts"], data_dir=data_dir,
                                        split="validation"))
  want = ["".join(text for text, _ in chunks) for chunks in documents[18:]]
  assert [VOCAB.decode(plain.example(plain[i], None)["tokens"][1:-1])
          for i in range(len(plain))] == want


def test_built_math_corpus_flows_through_the_pipeline_like_the_generator(built):
  """A data config naming the TFDS dataset gives the same shuffled stream as the generator
  source it was built from (same source name, so the same shuffle), and trains."""
  def config(section):
    cfg = pipeline.default_data_config()
    cfg.seq_len = 128
    cfg.sources = {"math": section}
    cfg.phases = {"main": pipeline.phase_config(0, math=1.0)}
    return cfg

  from_tfds = config(sources.source_config("tfds", name=built["math"], data_dir=built["data_dir"],
                                           field="text", eval_split="validation"))
  from_generator = config({**MATH, "thoughts": False})
  for split, n in (("train", 60), ("eval", 12)):  # train: past one epoch of 40
    streams = [pipeline.source_stream(cfg, VOCAB, "math", split=split)
               for cfg in (from_tfds, from_generator)]
    items = [[next(it) for _ in range(n)] for it in map(iter, streams)]
    _assert_same_examples(*items)
  iterator = pipeline.make_train_iterator(from_tfds, VOCAB, global_batch_size=4)
  texts = {math_corpus.MathCorpus(math_corpus.MathCorpusConfig(
      seed=3, train_size=40, validation_size=12, test_size=12), "train")[i]["text"]
           for i in range(40)}
  for _ in range(3):
    batch = next(iterator)
    assert batch["tokens"].shape == (4, 128)
    for row in range(4):
      segments = batch["segment_ids"][row]
      for s in np.unique(segments[segments > 0]):
        tokens = batch["tokens"][row][segments == s]
        if tokens[0] == VOCAB.bos_id and tokens[-1] == VOCAB.eos_id:
          assert VOCAB.decode(tokens[1:-1]) in texts
  iterator.close()


def test_build_reuses_an_identical_dataset_and_refuses_a_changed_one(built, tmp_path):
  data_dir = built["data_dir"]
  info = os.path.join(data_dir, "ponder_procedural", "dyck_k8", tfds_builders.VERSION,
                      "dataset_info.json")
  stamp = os.stat(info).st_mtime_ns
  assert tfds_builders.build(DYCK, data_dir, name="dyck_k8") == built["dyck"]
  assert os.stat(info).st_mtime_ns == stamp  # reused, not rewritten
  with pytest.raises(ValueError, match="already holds a dataset built from"):
    tfds_builders.build({**DYCK, "seed": 12}, data_dir, name="dyck_k8")
  # A thought file edited in place is a different dataset, though its path is the same.
  path = tmp_path / "edited.jsonl"
  thoughts.write_thought_records(path, [("a", [("One. ", "t"), ("Two.", None)])])
  section = sources.source_config("thoughts", path=str(path), eval_fraction=0.0)
  assert tfds_builders.build(section, data_dir) == "ponder_thoughts/edited"
  thoughts.write_thought_records(path, [("a", [("One. ", "changed"), ("Two.", None)])])
  with pytest.raises(ValueError, match="already holds"):
    tfds_builders.build(section, data_dir)
  assert tfds_records.built_datasets(data_dir) == sorted(
      [built["dyck"], built["math"], built["thoughts"], "ponder_thoughts/edited"])


@pytest.mark.parametrize("section, name, key", [
    ({**DYCK, "task": "dyk"}, "warm", "data.sources.warm.task"),
    ({**DYCK, "k": 0}, "warm", "data.sources.warm.k"),
    (sources.source_config("procedural", task="dyck"), "", "data.sources.dyck.num_items"),
    ({**MATH, "train_size": 0}, "", "data.sources.corpus.train_size"),
    (sources.source_config("text"), "", "kind"),
    (DYCK, "bad/name", "name"),
])
def test_build_rejects_bad_sections(tmp_path, section, name, key):
  with pytest.raises(ConfigError, match=f"'{key}'"):
    tfds_builders.build(section, tmp_path, name=name)
  assert not tfds_records.built_datasets(tmp_path)


@pytest.mark.parametrize("change, key, why", [
    ({"data_dir": "/nonexistent/tfds"}, "data.sources.w.data_dir", "no such directory"),
    ({"data_dir": ""}, "data.sources.w.data_dir", "name the directory"),
    ({"name": "ponder_procedural/dyck"}, "data.sources.w.name", "built there: .*dyck_k8"),
    ({"split": "test"}, "data.sources.w.split", "splits are"),
    ({"layout": "text"}, "data.sources.w.layout", "must be one of"),
    ({"name": "MATH", "layout": "procedural"}, "data.sources.w.layout", "has features"),
])
def test_reading_rejects_bad_options(built, change, key, why):
  options = {"name": built["dyck"], "split": "train", "data_dir": built["data_dir"],
             "layout": "procedural", **change}
  if options["name"] == "MATH":
    options["name"] = built["math"]
  with pytest.raises(ConfigError, match=f"'{key}'.*{why}"):
    tfds_records.TfdsRecords(options.pop("name"), options.pop("split"), key="data.sources.w",
                             **options)


# seqio (loads TensorFlow) ----------------------------------------------------------------------


def _seqio_examples(task, split, n=None):
  ds = task.get_dataset(split=split, shuffle=False)
  if n is not None:
    ds = ds.take(n)
  return [{"tokens": ex["targets"], "loss_mask": ex["loss_mask"]}
          for ex in ds.as_numpy_iterator()]


def test_seqio_tasks_yield_the_native_and_tfds_tokens(built):
  seqio_tasks = pytest.importorskip("ponder_jax.data.seqio_tasks")
  dyck = seqio_tasks.register_task("test_interop.dyck_k8", DYCK, seed=SEED)
  math = seqio_tasks.register_task("test_interop.math", MATH, seed=SEED)
  assert set(dyck.splits) == {"train", "validation"}
  assert set(math.splits) == {"train", "validation", "test"}
  for split, native_split in (("train", "train"), ("validation", "eval")):
    native = _native(DYCK, native_split)
    records = tfds_records.TfdsRecords(built["dyck"], split, data_dir=built["data_dir"],
                                       layout="procedural")
    from_tfds = [native.example((i, records[i]), None) for i in range(len(records))]
    _assert_same_examples(from_tfds, _seqio_examples(dyck, split))
    _assert_same_examples([native.example(native[i], None) for i in range(len(native))],
                          from_tfds)
    native = _native(MATH, native_split)
    records = tfds_records.TfdsRecords(built["math"], split, data_dir=built["data_dir"],
                                       layout="thoughts")
    from_tfds = [native.example((i, records[i]), _rng(i)) for i in range(len(records))]
    _assert_same_examples(from_tfds, _seqio_examples(math, split))
    _assert_same_examples([native.example(native[i], _rng(i)) for i in range(len(native))],
                          from_tfds)
  # The math test split (the pipeline never reads it) matches the TFDS build's.
  native = _native(MATH)
  records = tfds_records.TfdsRecords(built["math"], "test", data_dir=built["data_dir"],
                                     layout="thoughts")
  _assert_same_examples([native.example((i, records[i]), _rng(i)) for i in range(len(records))],
                        _seqio_examples(math, "test"))
  # The stable default tasks are the native defaults (first items of their streams).
  import seqio  # pylint: disable=g-import-not-at-top
  for name, section in (("ponder_jax.dyck", sources.source_config("procedural", task="dyck")),
                        ("ponder_jax.math", sources.source_config("math", thoughts=False)),
                        ("ponder_jax.text", sources.source_config("text"))):
    native = _native(section)
    _assert_same_examples([native.example(native[i], None) for i in range(3)],
                          _seqio_examples(seqio.get_mixture_or_task(name), "train", 3))


def test_seqio_registration_mixture_and_vocabulary():
  seqio_tasks = pytest.importorskip("ponder_jax.data.seqio_tasks")
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  names = {f"ponder_jax.{task}" for task in procedural.PROCEDURAL_TASKS}
  names |= {"ponder_jax.math", "ponder_jax.math_thoughts", "ponder_jax.text"}
  assert names <= set(seqio_tasks.registered_tasks())
  dyck = seqio.get_mixture_or_task("ponder_jax.dyck")
  importlib.reload(seqio_tasks)  # importing again registers nothing new and does not fail
  assert seqio.get_mixture_or_task("ponder_jax.dyck") is dyck
  section = sources.source_config("procedural", task="addition", digits=3)
  task = seqio_tasks.register_task("test_interop.addition", section)
  assert seqio_tasks.register_task("test_interop.addition", section) is task
  with pytest.raises(ValueError, match="'test_interop.addition' is already registered"):
    seqio_tasks.register_task("test_interop.addition", {**section, "digits": 4})
  with pytest.raises(ConfigError, match="'data.sources.test_interop.bad.task'"):
    seqio_tasks.register_task("test_interop.bad", {**section, "task": "additon"})

  # Rates are honoured: addition items (3 * 3 + 4 = 13 symbols) vs needle items (63).
  seqio_tasks.register_task("test_interop.needle",
                            sources.source_config("procedural", task="needle"))
  rates = {"test_interop.addition": 3.0, "test_interop.needle": 1.0}
  mixture = seqio_tasks.register_mixture("test_interop.mix", rates)
  assert seqio_tasks.register_mixture("test_interop.mix", rates) is mixture
  lengths = [len(ex["targets"]) for ex in mixture.get_dataset(
      split="train", shuffle=False, seed=0).take(400).as_numpy_iterator()]
  assert set(lengths) == {13, 63}
  assert abs(lengths.count(13) / 400 - 0.75) < 0.08
  # T5X's packed decoder features weight exactly the loss mask: the answer digits and stop.
  converter = seqio_tasks.LossMaskLMFeatureConverter(pack=True)
  packed = next(converter(task.get_dataset(split="train", shuffle=False),
                          {"targets": 64, "loss_mask": 64}).as_numpy_iterator())
  native = _native(section)
  examples = [native.example(native[i], None) for i in range(4)]  # 4 * 13 tokens fill 64
  np.testing.assert_array_equal(packed["decoder_target_tokens"][:52],
                                np.concatenate([ex["tokens"] for ex in examples]))
  np.testing.assert_array_equal(packed["decoder_loss_weights"],
                                np.concatenate([ex["loss_mask"] for ex in examples] + [[0] * 12]))
  assert packed["decoder_loss_weights"].sum() < packed["decoder_segment_ids"].astype(bool).sum()
  with pytest.raises(ValueError, match="no seqio task 'test_interop.nope'"):
    seqio_tasks.register_mixture("test_interop.mix2", {"test_interop.nope": 1.0})
  with pytest.raises(ValueError, match="not a positive number"):
    seqio_tasks.register_mixture("test_interop.mix2", {"test_interop.needle": 0.0})

  # The vocabulary is the project's; seqio's own SentencePiece vocabulary on the same model file
  # encodes text to the same ids (T5X configs may name either).
  vocab = dyck.output_features["targets"].vocabulary
  stock = seqio.SentencePieceVocabulary(str(default_tokenizer_path()))
  assert vocab.vocab_size == stock.vocab_size == VOCAB.vocab_size
  assert (vocab.eos_id, vocab.bos_id, vocab.pad_id) == (VOCAB.eos_id, VOCAB.bos_id, 0)
  for text in ("123*45=5535", "Solve 3x+7=22.  x=5\n", "Ünïcödé ☃ 漢字\ttab", "<pause> typed"):
    ids = VOCAB.encode(text)
    assert list(vocab.encode(text)) == list(stock.encode(text)) == ids
    assert vocab.encode_tf(tf.constant(text)).numpy().tolist() == ids
    assert vocab.decode(ids) == text
  rows = [[VOCAB.bos_id, *VOCAB.encode("ab"), VOCAB.eos_id, 300], VOCAB.encode("xyz")]
  width = max(map(len, rows)) + 2
  batch = tf.constant([row + [0] * (width - len(row)) for row in rows])  # padded with 0
  # Decoding stops at eos (seqio) and drops padding.
  assert vocab.decode_tf(batch).numpy().tolist() == [b"<bos>ab<eos>", b"xyz"]
