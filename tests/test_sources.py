"""Document sources: every kind opens real files (text, JSONL, ArrayRecord, a locally built TFDS
dataset, thought records) or generators (math corpus, procedural tasks), tokenizes with bos/eos,
holds out an eval split, and rejects bad input with the file and line or the config key."""

import json

import numpy as np
import pytest

from ponder_jax.config import ConfigError
from ponder_jax.data import math_corpus, sources, thoughts
from ponder_jax.data.vocab import PROCEDURAL_OFFSET, ByteVocabulary

VOCAB = ByteVocabulary()
RNG = np.random.default_rng(0)


def _open(name, section, split="train", vocab=VOCAB):
  return sources.open_source(sources.validate_source(name, section), vocab, split)


def _texts(source):
  """Decoded documents of a text-like source, bos/eos checked and stripped."""
  out = []
  for i in range(len(source)):
    tokens = source.example(source[i], RNG)["tokens"]
    assert tokens[0] == VOCAB.bos_id and tokens[-1] == VOCAB.eos_id
    out.append(VOCAB.decode(tokens[1:-1]))
  return out


def test_text_file_split_by_regex_with_held_out_tail(tmp_path):
  path = tmp_path / "docs.txt"
  docs = [f"document {i}\nline two of {i}" for i in range(20)]
  path.write_text("\n=====\n".join(docs))
  section = sources.source_config("text", path=str(path), delimiter=r"\n=+\n",
                                  eval_fraction=0.1)
  train, held_out = _open("t", section), _open("t", section, "eval")
  assert _texts(train) == docs[:18] and _texts(held_out) == docs[18:]
  ex = train.example(train[0], RNG)
  assert ex["tokens"].dtype == np.int32 and ex["loss_mask"].all()


def test_shipped_text_is_the_default():
  source = _open("shakespeare", sources.source_config("text"))
  assert len(source) > 5000
  assert "Shakespeare" in "".join(_texts(_Head(source, 5)))


class _Head:
  def __init__(self, source, n):
    self.source, self.n = source, n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    return self.source[i]

  def example(self, record, rng):
    return self.source.example(record, rng)


def test_jsonl_field_errors_and_counted_skips(tmp_path):
  path = tmp_path / "c.jsonl"
  path.write_text('{"body": "alpha"}\n\n{"body": "beta"}\n{"body": 3}\n{oops\n{"body": "gamma"}\n')
  section = sources.source_config("jsonl", path=str(path), field="body", eval_fraction=0.0)
  with pytest.raises(ValueError, match=f"{path}:4: field 'body' is int"):
    _open("j", section)
  section.on_error = "skip"
  source = _open("j", section)
  assert _texts(source) == ["alpha", "beta", "gamma"] and source.num_skipped == 2
  assert source.first_skipped.startswith(f"{path}:4: ")
  with pytest.raises(ValueError, match=f"{path}:1: missing field 'text'"):
    _open("j", sources.source_config("jsonl", path=str(path)))


def test_array_record_text_and_json_records(tmp_path):
  from array_record.python.array_record_module import ArrayRecordWriter
  plain, as_json = tmp_path / "plain.array_record", tmp_path / "json.array_record"
  for path, records in ((plain, [f"text {i}".encode() for i in range(10)]),
                        (as_json, [json.dumps({"t": f"json {i}"}).encode() for i in range(9)]
                         + [b"not json"])):
    writer = ArrayRecordWriter(str(path), "group_size:1")
    for record in records:
      writer.write(record)
    writer.close()
  source = _open("a", sources.source_config("array_record", path=str(plain), eval_fraction=0.2))
  assert _texts(source) == [f"text {i}" for i in range(8)]
  held_out = _open("a", sources.source_config("array_record", path=str(plain),
                                              eval_fraction=0.2), "eval")
  assert _texts(held_out) == ["text 8", "text 9"]
  both = _open("a", sources.source_config("array_record", path=f"{tmp_path}/*.array_record",
                                          field="t", eval_fraction=0.0))
  assert len(both) == 20
  with pytest.raises(ValueError, match=r"data.sources.a: record 9 of .*json.array_record"):
    both.example(both[9], RNG)


def test_tfds_data_source(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")

  class PipelineTestText(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    # TFDS locates a builder's code through `importlib_resources` when its module is in a package
    # (tests/), and that backport is not installed; a builder with no code path skips the lookup.
    code_path = None

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(0, 12),
              "validation": self._generate_examples(12, 15)}

    def _generate_examples(self, start, stop):
      for i in range(start, stop):
        yield i, {"text": f"tfds document {i}"}

  PipelineTestText(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  section = sources.source_config("tfds", name="pipeline_test_text", data_dir=str(tmp_path),
                                  eval_split="validation")
  train, held_out = _open("w", section), _open("w", section, "eval")
  assert sorted(_texts(train)) == sorted(f"tfds document {i}" for i in range(12))
  assert sorted(_texts(held_out)) == [f"tfds document {i}" for i in range(12, 15)]
  with pytest.raises(ConfigError, match="data.sources.w.field"):  # at open, not mid-training
    _open("w", sources.source_config("tfds", name="pipeline_test_text", data_dir=str(tmp_path),
                                     field="body"))


def test_math_corpus_with_and_without_thoughts():
  corpus = dict(seed=3, validation_size=40)
  with_thoughts = _open("m", sources.source_config("math", **corpus))
  raw = _open("m", sources.source_config("math", thoughts=False, **corpus))
  config = math_corpus.MathCorpusConfig(**corpus)
  record = math_corpus.MathCorpus(config, "train")[5]
  tokens = with_thoughts.example(with_thoughts[5], np.random.default_rng(0))["tokens"]
  assert np.isin([VOCAB.sol_id, VOCAB.eol_id], tokens).all()
  assert VOCAB.decode(raw.example(raw[5], RNG)["tokens"][1:-1]) == record["text"]
  # The eval split is the corpus's validation split.
  raw_eval = _open("m", sources.source_config("math", thoughts=False, **corpus), "eval")
  validation = math_corpus.MathCorpus(config, "validation")
  assert len(raw_eval) == 40
  assert VOCAB.decode(raw_eval.example(raw_eval[7], RNG)["tokens"][1:-1]) == validation[7]["text"]


def test_procedural_ids_masks_and_fresh_eval_seed():
  section = sources.source_config("procedural", task="sort", length=8, vocab=20, seed=4)
  train, held_out = _open("p", section), _open("p", section, "eval")
  item = train._records[0]
  ex = train.example(train[0], RNG)
  np.testing.assert_array_equal(ex["tokens"], item["tokens"] + PROCEDURAL_OFFSET)
  np.testing.assert_array_equal(ex["loss_mask"], item["loss_mask"])
  assert ex["loss_mask"].sum() == 8  # the sorted output span
  assert len(held_out) == 1024
  train_items = {tuple(train.example(train[i], RNG)["tokens"]) for i in range(50)}
  eval_items = {tuple(held_out.example(held_out[i], RNG)["tokens"]) for i in range(50)}
  assert not train_items & eval_items


def test_thought_record_source(tmp_path):
  path = tmp_path / "thoughts.jsonl"
  thoughts.write_thought_records(path, [(f"d{i}", [(f"chunk {i}.", f"why {i}"), (" end", None)])
                                        for i in range(10)])
  section = sources.source_config("thoughts", path=str(path), prior_prob=1.0, eval_fraction=0.2)
  source, held_out = _open("th", section), _open("th", section, "eval")
  assert (len(source), len(held_out)) == (8, 2)
  text = VOCAB.decode(held_out.example(held_out[1], RNG)["tokens"])
  assert text == ("<bos><|START_OF_LATENT|><|PRIOR_PREFIX|>why 9<|END_OF_LATENT|>chunk 9. end"
                  "<eos>")


class _SmallVocabulary(ByteVocabulary):
  vocab_size = 300  # bytes from 0x23 on (ids 300 ...) fall outside


def test_token_id_outside_vocabulary_names_the_source(tmp_path):
  path = tmp_path / "t.txt"
  path.write_text("\x01\x02\n\nabc")
  source = _open("tiny", sources.source_config("text", path=str(path), eval_fraction=0.0),
                 vocab=_SmallVocabulary())
  source.example(source[0], RNG)
  with pytest.raises(ValueError, match=r"data.sources.tiny \(.*t.txt document 1\): token id "
                                       r"364 is outside the vocabulary \[0, 300\)"):
    source.example(source[1], RNG)


def test_procedural_task_too_large_for_the_vocabulary():
  class NoProcedural(ByteVocabulary):
    num_procedural = 16

  with pytest.raises(ConfigError, match=r"data.sources.d.task.*needs 128 procedural symbols"):
    _open("d", sources.source_config("procedural", task="dyck"), vocab=NoProcedural())


@pytest.mark.parametrize("contents, kind", [("\n\n  \n", "text"), ("\n", "jsonl")])
def test_empty_source_names_the_key(tmp_path, contents, kind):
  path = tmp_path / "empty"
  path.write_text(contents)
  with pytest.raises(ConfigError, match=r"data.sources.e.path.*holds no documents"):
    _open("e", sources.source_config(kind, path=str(path)))


@pytest.mark.parametrize("section, key", [
    ({"kind": "parquet"}, "data.sources.s.kind"),
    ({"kind": "text", "paht": "x"}, "data.sources.s.paht"),
    ({"kind": "text", "path": "/no/such/file"}, "data.sources.s.path"),
    ({"kind": "text", "delimiter": "("}, "data.sources.s.delimiter"),
    ({"kind": "jsonl", "path": __file__, "on_error": "ignore"}, "data.sources.s.on_error"),
    ({"kind": "procedural", "task": "juggling"}, "data.sources.s.task"),
    ({"kind": "procedural", "task": "dyck", "depth": 3}, "data.sources.s.depth"),
    ({"kind": "procedural", "task": "sort", "length": 0}, "data.sources.s.length"),
    ({"kind": "math", "train_size": -1}, "data.sources.s.train_size"),
    ({"kind": "text", "eval_fraction": 1.0}, "data.sources.s.eval_fraction"),
    ({"kind": "thoughts", "path": __file__, "prior_prob": 2.0}, "data.sources.s.prior_prob"),
    ({"kind": "text", "pause": "yes"}, "data.sources.s.pause"),
    ({"kind": "tfds"}, "data.sources.s.name"),
    ({"kind": "finetune", "generator": "csv"}, "data.sources.s.generator"),
    ({"kind": "finetune", "generator": "math", "path": "x"}, "data.sources.s.path"),
    ({"kind": "finetune", "path": __file__, "promt_field": "q"}, "data.sources.s.promt_field"),
    ({"kind": "finetune", "path": __file__, "target_field": ""}, "data.sources.s.target_field"),
    ({"kind": "finetune", "path": "/no/such.jsonl"}, "data.sources.s.path"),
    ({"kind": "finetune", "path": __file__, "num_pauses": -1}, "data.sources.s.num_pauses"),
    ({"kind": "finetune", "path": __file__, "pause": True}, "data.sources.s.pause"),
    ({"kind": "finetune", "generator": "procedural", "task": "sort", "depth": 2},
     "data.sources.s.depth"),
    ({"kind": "finetune", "generator": "math", "train_size": -1}, "data.sources.s.train_size"),
])
def test_bad_sections_name_the_key(section, key):
  with pytest.raises(ConfigError, match=key.replace(".", r"\.") + "'"):
    sources.validate_source("s", section)


def test_source_config_rejects_unknown_keys():
  with pytest.raises(ConfigError, match="delim"):
    sources.source_config("text", delim="x")
  assert sources.source_config("procedural", task="dyck", k=8).k == 8
  with pytest.raises(ConfigError, match="'generator'"):
    sources.source_config("finetune", generator="csv")
  with pytest.raises(ConfigError, match="'field'"):  # a jsonl *kind* key, not a finetune one
    sources.source_config("finetune", field="text")
  with pytest.raises(ConfigError, match="'path'"):  # a key of the jsonl generator, not math's
    sources.source_config("finetune", generator="math", path="x.jsonl")
  assert sources.source_config("finetune", generator="procedural", task="sort", length=4).length


# Pauses by kind -----------------------------------------------------------------------------


@pytest.mark.parametrize("section, pause", [
    (sources.source_config("text"), True),
    (sources.source_config("math"), True),
    (sources.source_config("thoughts", path=__file__), True),
    (sources.source_config("jsonl", path=__file__), True),
    (sources.source_config("tfds", name="x"), True),
    (sources.source_config("tfds", name="x", layout="thoughts"), True),
    (sources.source_config("tfds", name="x", layout="procedural"), False),
    (sources.source_config("procedural", task="dyck"), False),
    (sources.source_config("finetune", generator="math"), False),
    (sources.source_config("procedural", task="dyck", pause=True), True),  # overrides win
    (sources.source_config("math", pause=False), False),
    ({"kind": "procedural", "task": "sort", "pause": True}, True),
])
def test_pause_default_is_by_kind_and_an_override_wins(section, pause):
  spec = sources.validate_source("s", section)
  assert spec.pause is pause


def test_pause_override_parses_on_the_command_line(tmp_path):
  """`pause` defaults to a typed None, so `--config.data.sources.<name>.pause=true` parses;
  sections never share the value."""
  from absl import flags
  from ml_collections import config_flags
  path = tmp_path / "cfg.py"
  path.write_text("import ml_collections\nfrom ponder_jax.data.sources import source_config\n"
                  "def get_config():\n"
                  "  return ml_collections.ConfigDict({'a': source_config('procedural', "
                  "task='dyck'), 'b': source_config('procedural', task='dyck')})\n")
  argv = ["prog", f"--config={path}", "--config.a.pause=true"]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  config = values.config
  assert config.a.pause is True and config.b.pause is None
  assert sources.validate_source("a", config.a).pause
  assert not sources.validate_source("b", config.b).pause
  with pytest.raises(TypeError):
    config.b.pause = "yes"


# Finetune pairs -----------------------------------------------------------------------------


def _finetune_jsonl(tmp_path, lines):
  path = tmp_path / "ft.jsonl"
  path.write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n")
  return path


@pytest.mark.parametrize("m", [0, 3])
def test_finetune_jsonl_layout_and_loss_on_the_target_only(tmp_path, m):
  path = _finetune_jsonl(tmp_path, [{"q": f"question {i}?", "a": f" answer {i}", "x": 1}
                                    for i in range(10)])
  section = sources.source_config("finetune", path=str(path), prompt_field="q", target_field="a",
                                  num_pauses=m, eval_fraction=0.2)
  train, held_out = _open("f", section), _open("f", section, "eval")
  assert (len(train), len(held_out)) == (8, 2)
  ex = held_out.example(held_out[1], None)
  prompt, target = [VOCAB.bos_id, *VOCAB.encode("question 9?")], [*VOCAB.encode(" answer 9"),
                                                                   VOCAB.eos_id]
  np.testing.assert_array_equal(ex["tokens"], prompt + [VOCAB.pause_id] * m + target)
  np.testing.assert_array_equal(ex["loss_mask"], [0] * (len(prompt) + m) + [1] * len(target))
  # The same pair without pauses is the standard-finetuning (StdFT) example.
  std = _open("f", sources.source_config("finetune", path=str(path), prompt_field="q",
                                         target_field="a", num_pauses=0, eval_fraction=0.2),
              "eval").example(held_out[1], None)
  keep = ex["tokens"] != VOCAB.pause_id
  for key in ("tokens", "loss_mask"):
    np.testing.assert_array_equal(ex[key][keep], std[key])


def test_finetune_jsonl_bad_lines_name_file_and_line(tmp_path):
  path = _finetune_jsonl(tmp_path, [{"prompt": "p", "target": "t"}, "", "{broken",
                                    {"prompt": "p"}, {"prompt": "p", "target": 7},
                                    {"prompt": "p2", "target": "t2"}])
  section = sources.source_config("finetune", path=str(path), eval_fraction=0.0)
  with pytest.raises(ValueError, match=f"{path}:3: "):
    _open("f", section)
  section.on_error = "skip"
  source = _open("f", section)
  assert [source[i][1] for i in range(len(source))] == [("p", "t"), ("p2", "t2")]
  assert source.num_skipped == 3 and source.first_skipped.startswith(f"{path}:3: ")
  path.write_text('{"prompt": "p", "target": "t"}\n{"prompt": "p"}\n')
  with pytest.raises(ValueError, match=f"{path}:2: missing field 'target'"):
    _open("f", sources.source_config("finetune", path=str(path), eval_fraction=0.0))


def test_finetune_math_question_to_answer():
  corpus = dict(seed=3, validation_size=20)
  section = sources.source_config("finetune", generator="math", num_pauses=4, **corpus)
  train, held_out = _open("m", section), _open("m", section, "eval")
  config = math_corpus.MathCorpusConfig(**corpus)
  for source, split in ((train, "train"), (held_out, "validation")):
    records = math_corpus.MathCorpus(config, split)
    for i in range(20):
      record, ex = records[i], source.example(source[i], None)
      text = VOCAB.decode(ex["tokens"])
      assert text == f"<bos>{record['question']}{'<pause>' * 4}{record['answer_text']}<eos>"
      assert VOCAB.decode(ex["tokens"][ex["loss_mask"] > 0]) == record["answer_text"] + "<eos>"
  assert len(held_out) == 20


@pytest.mark.parametrize("task, params", [("sort", dict(length=8, vocab=20)),
                                          ("needle", dict(max_pairs=6))])
def test_finetune_procedural_input_to_output(task, params):
  section = sources.source_config("finetune", generator="procedural", task=task, num_pauses=2,
                                  seed=4, **params)
  train, held_out = _open("p", section), _open("p", section, "eval")
  native = _open("p", sources.source_config("procedural", task=task, seed=4, **params))
  for i in range(10):
    item = native.example(native[i], None)
    span = np.flatnonzero(item["loss_mask"])
    ex = train.example(train[i], None)
    # input, 2 pauses, the output span; the padding after the span is dropped.
    want = [*item["tokens"][:span[0]], VOCAB.pause_id, VOCAB.pause_id,
            *item["tokens"][span[0]:span[-1] + 1]]
    np.testing.assert_array_equal(ex["tokens"], want)
    np.testing.assert_array_equal(ex["loss_mask"], [0] * (span[0] + 2) + [1] * span.size)
  assert len(held_out) == 1024
  eval_items = {tuple(held_out.example(held_out[i], None)["tokens"]) for i in range(20)}
  assert not eval_items & {tuple(train.example(train[i], None)["tokens"]) for i in range(20)}


def test_missing_shipped_text_names_the_key(tmp_path, monkeypatch):
  monkeypatch.setenv("PONDER_JAX_DATA_DIR", str(tmp_path))
  with pytest.raises(ConfigError, match=r"data.sources.s.path.*PONDER_JAX_DATA_DIR"):
    sources.validate_source("s", sources.source_config("text"))


def test_every_kind_has_one_opener():
  assert set(sources._OPENERS) == set(sources.KINDS)  # pylint: disable=protected-access
