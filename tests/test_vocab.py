"""Vocabularies: the reserved layout, exact round trips, specials never produced by encode."""

import functools
import importlib.util
import io
import pickle
import shutil

import numpy as np
import pytest
import sentencepiece as spm
from hypothesis import given, settings, strategies as st

from ponder_jax.config import ConfigError, ModelConfig
from ponder_jax.data import DATA_DIR, DATA_DIR_ENV, data_dir
from ponder_jax.data.math_corpus import KINDS, MathCorpus, MathCorpusConfig
from ponder_jax.data.vocab import (
    BYTE_OFFSET, BYTE_VOCAB_SIZE, NUM_PROCEDURAL, SENTENCEPIECE_VOCAB_SIZE, SPECIAL_PIECES,
    ByteVocabulary, SentencePieceVocabulary, control_pieces, load_vocabulary,
    run_procedural_symbols, run_vocabulary)

SP = load_vocabulary("sentencepiece")
BYTES = ByteVocabulary()
VOCABS = pytest.mark.parametrize("vocab", [SP, BYTES], ids=["sentencepiece", "byte"])
SHAKESPEARE = (DATA_DIR / "shakespeare.txt").read_text(encoding="utf-8")
DOCUMENTED_IDS = {"pad": 0, "bos": 1, "eos": 2, "pause": 4, "sol": 5, "eol": 6, "prior": 7,
                  "posterior": 8}
SPECIAL_NAMES = list(SPECIAL_PIECES.values()) + ["<proc_0>", "<proc_255>", "<0x41>", "\u2581"]
# Text that mixes arbitrary unicode with the names of the special tokens.
TEXTS = st.lists(st.one_of(st.text(), st.sampled_from(SPECIAL_NAMES)), max_size=6).map("".join)


def _math_records(n_per_kind=60):
  records = []
  for kind in KINDS:
    corpus = MathCorpus(MathCorpusConfig(kinds=(kind,), seed=3), "train")
    records += [corpus[i] for i in range(n_per_kind)]
  return records


@VOCABS
def test_reserved_ids_are_where_documented(vocab):
  assert vocab.special_ids == DOCUMENTED_IDS
  assert vocab.num_procedural == 256
  assert vocab.procedural_id(0) == 9 and vocab.procedural_id(255) == 264
  assert vocab.decode(list(range(9))) == "".join(SPECIAL_PIECES.values())


def test_vocab_sizes():
  assert SP.vocab_size == SENTENCEPIECE_VOCAB_SIZE == ModelConfig().vocab_size == 8192
  assert BYTES.vocab_size == BYTE_VOCAB_SIZE == 576 and BYTE_VOCAB_SIZE % 64 == 0


def test_sentencepiece_pieces_follow_the_layout():
  assert [SP.piece(i) for i in range(9)] == list(SPECIAL_PIECES.values())
  assert [SP.piece(9 + i) for i in (0, 17, 255)] == ["<proc_0>", "<proc_17>", "<proc_255>"]
  assert SP.piece(BYTE_OFFSET) == "<0x00>" and SP.piece(BYTE_OFFSET + 255) == "<0xFF>"
  # The same ids mean the same bytes in both vocabularies.
  assert SP.encode("\x07") == BYTES.encode("\x07") == [BYTE_OFFSET + 7]


@functools.cache
def _shakespeare_ids(vocab):
  return vocab.encode(SHAKESPEARE)


@VOCABS
def test_shakespeare_round_trips(vocab):
  ids = _shakespeare_ids(vocab)
  assert vocab.decode(ids) == SHAKESPEARE
  assert min(ids) >= BYTE_OFFSET


def test_sentencepiece_compresses_shakespeare():
  # 0.273 tokens per character when committed; bytes are 1.0.
  tokens_per_char = len(_shakespeare_ids(SP)) / len(SHAKESPEARE)
  assert 0.2 < tokens_per_char < 0.32


@VOCABS
def test_math_records_round_trip_with_thought_tokens(vocab):
  for record in _math_records():
    (question, _), (answer_text, thought) = record["chunks"]
    assert vocab.decode(vocab.encode(record["text"])) == record["text"]
    # Chunks encoded apart and joined with latent tokens decode to the joined text.
    ids = (vocab.encode(question) + [vocab.sol_id, vocab.prior_id] + vocab.encode(thought)
           + [vocab.eol_id] + vocab.encode(answer_text))
    assert vocab.decode(ids) == (
        f"{question}<|START_OF_LATENT|><|PRIOR_PREFIX|>{thought}<|END_OF_LATENT|>{answer_text}")


@VOCABS
def test_encode_batch_matches_encode(vocab):
  texts = [r["text"] for r in _math_records(5)] + ["", SHAKESPEARE[:5000], "<pause> é"]
  assert vocab.encode_batch(texts) == [vocab.encode(t) for t in texts]


def test_digits_are_split():
  text = "".join(r["text"] + r["thought"] for r in _math_records(20)) + " 1234567890 x=42"
  pieces = [SP.piece(i) for i in SP.encode(text)]
  with_digits = [p for p in pieces if any(c.isdigit() for c in p)]
  assert with_digits and all(len(p.lstrip("\u2581")) == 1 for p in with_digits)
  assert [SP.piece(i) for i in SP.encode("1234567890")] == list("1234567890")


@VOCABS
@settings(max_examples=150, deadline=None)
@given(text=TEXTS)
def test_encode_never_produces_reserved_ids(vocab, text):
  text_end = BYTE_OFFSET + 256 if vocab is BYTES else vocab.vocab_size
  assert all(BYTE_OFFSET <= i < text_end for i in vocab.encode(text))


@settings(max_examples=150, deadline=None)
@given(text=TEXTS)
def test_byte_vocabulary_round_trips_any_unicode(text):
  assert BYTES.decode(BYTES.encode(text)) == text


@settings(max_examples=150, deadline=None)
@given(text=TEXTS)
def test_sentencepiece_round_trips_text_without_its_space_marker(text):
  text = text.replace("\u2581", "")
  assert SP.decode(SP.encode(text)) == text


def test_sentencepiece_space_marker_decodes_as_space():
  # The one documented exception to the exact round trip.
  assert SP.decode(SP.encode("a\u2581b")) == "a b"


@VOCABS
def test_procedural_ids_are_distinct_from_specials_and_text(vocab):
  ids_N = vocab.procedural_id(np.arange(256))
  assert ids_N.dtype == np.int32 and ids_N.tolist() == list(range(9, 265))
  assert not set(ids_N.tolist()) & set(vocab.special_ids.values())
  assert not set(ids_N.tolist()) & set(_shakespeare_ids(vocab))
  grid = np.array([[0, 1], [128, 255]], dtype=np.uint8)
  assert vocab.procedural_id(grid).tolist() == [[9, 10], [137, 264]]
  assert vocab.procedural_id(np.int64(3)) == 12
  assert vocab.decode(vocab.procedural_id(np.array([0, 64, 255])).tolist()) == (
      "<proc_0><proc_64><proc_255>")


@VOCABS
@pytest.mark.parametrize("bad", [-1, 256, np.array([0, 256]), np.array([-3]),
                                 np.array([1.0]), True])
def test_procedural_id_rejects_bad_symbols(vocab, bad):
  with pytest.raises(ValueError, match="procedural symbol"):
    vocab.procedural_id(bad)


@VOCABS
def test_decode_renders_specials_by_name_and_rejects_bad_ids(vocab):
  ids = [vocab.bos_id] + vocab.encode("Q") + [vocab.pause_id, vocab.sol_id, vocab.posterior_id]
  ids += vocab.encode("é") + [vocab.eol_id, vocab.eos_id, vocab.pad_id]
  assert vocab.decode(ids) == (
      "<bos>Q<pause><|START_OF_LATENT|><|POSTERIOR_PREFIX|>é<|END_OF_LATENT|><eos><pad>")
  assert vocab.decode(np.array(ids, np.int32)) == vocab.decode(ids)
  assert vocab.decode([]) == ""
  for bad in (-1, vocab.vocab_size):
    with pytest.raises(ValueError, match=f"id {bad} outside"):
      vocab.decode([vocab.bos_id, bad])


def test_byte_vocabulary_names_unused_ids_and_survives_cut_characters():
  assert BYTES.decode([530, BYTE_VOCAB_SIZE - 1]) == "<unused_530><unused_575>"
  cut = BYTES.encode("é")[:1]
  assert BYTES.decode(cut) == "\ufffd"


def test_load_vocabulary_specs(tmp_path):
  assert isinstance(load_vocabulary("byte"), ByteVocabulary)
  path = DATA_DIR / "tokenizer.model"
  explicit = load_vocabulary(f"sentencepiece:{path}")
  assert isinstance(explicit, SentencePieceVocabulary) and explicit.encode("Hamlet") == (
      SP.encode("Hamlet"))
  for spec in ("bpe", "byte:3", "hf:", "", "sentencepieces"):
    with pytest.raises(ConfigError, match="data.vocab") as error:
      load_vocabulary(spec)
    assert error.value.key == "data.vocab"
  missing = tmp_path / "none.model"
  with pytest.raises(ConfigError, match="none.model"):
    load_vocabulary(f"sentencepiece:{missing}")
  garbage = tmp_path / "garbage.model"
  garbage.write_bytes(b"not a model")
  with pytest.raises(ConfigError, match="not a SentencePiece model"):
    load_vocabulary(f"sentencepiece:{garbage}")


def test_data_dir_follows_the_environment(tmp_path, monkeypatch):
  assert data_dir() == DATA_DIR and (DATA_DIR / "tokenizer.model").is_file()
  monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
  assert data_dir() == tmp_path
  with pytest.raises(ConfigError, match=str(tmp_path)):
    load_vocabulary("sentencepiece")
  shutil.copy(DATA_DIR / "tokenizer.model", tmp_path / "tokenizer.model")
  assert load_vocabulary("sentencepiece").path == tmp_path / "tokenizer.model"


def test_sentencepiece_vocabulary_pickles():
  clone = pickle.loads(pickle.dumps(SP))
  text = SHAKESPEARE[:3000]
  assert clone.encode(text) == SP.encode(text) and clone.vocab_size == SP.vocab_size


def _train_tokenizer_script():
  spec = importlib.util.spec_from_file_location("train_tokenizer",
                                                DATA_DIR / "train_tokenizer.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_train_tokenizer_is_deterministic_and_gives_the_layout(tmp_path):
  script = _train_tokenizer_script()
  text = SHAKESPEARE[:60000]
  sentences = script.text_sentences(text) + script.math_sentences(50)
  assert "".join(script.text_sentences(text)) == text
  model = script.train(sentences, vocab_size=700)
  assert script.train(sentences, vocab_size=700) == model
  path = tmp_path / "tiny.model"
  path.write_bytes(model)
  tiny = load_vocabulary(f"sentencepiece:{path}")
  assert tiny.vocab_size == 700 and tiny.special_ids == DOCUMENTED_IDS
  assert tiny.decode(tiny.encode(text)) == text


@pytest.mark.parametrize("flags,why", [
    ({}, "reserved layout"),
    # The right names at the right ids, but as user-defined symbols, which encode would produce.
    ({"user_defined_symbols": control_pieces(), "pad_id": 0, "bos_id": 1, "eos_id": 2,
      "unk_id": 3, "pad_piece": "<pad>", "bos_piece": "<bos>", "eos_piece": "<eos>",
      "byte_fallback": True}, "must be a control symbol"),
])
def test_a_model_without_the_layout_is_rejected(tmp_path, flags, why):
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(SHAKESPEARE[:30000].split("\n")),
                                 model_writer=model, vocab_size=800, minloglevel=2, **flags)
  path = tmp_path / "other.model"
  path.write_bytes(model.getvalue())
  with pytest.raises(ConfigError, match=why):
    load_vocabulary(f"sentencepiece:{path}")


def test_run_vocabulary_is_data_vocab_without_a_hugging_face_init():
  data = {"vocab": "byte", "sources": {"dyck": {"kind": "procedural"}}}
  assert isinstance(run_vocabulary(data, {"from_hf": ""}), ByteVocabulary)
  assert isinstance(run_vocabulary(data), ByteVocabulary)
  assert run_procedural_symbols(data) == NUM_PROCEDURAL
  assert run_procedural_symbols({"sources": {"text": {"kind": "text"}}}) == 0
