"""Thought documents: sentence splitting, BoLT chunking, the thought-record format and the
prior/posterior training layout."""

import json

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from ponder_jax.data import thoughts
from ponder_jax.data.vocab import ByteVocabulary

VOCAB = ByteVocabulary()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab .!?\"')\n\r\t", max_size=80))
def test_sentences_concatenate_back(text):
  units = thoughts.split_sentences(text)
  assert "".join(units) == text.lstrip("\r\n")
  assert all(units)


def test_sentence_rules():
  text = ('Mr. Smith met Dr. J. Watson at 3.30 p.m. today. "Is it late?" he asked! '
          "Yes, e.g. now. (It was.) Next\n\nNew paragraph... Done")
  assert thoughts.split_sentences(text) == [
      "Mr. Smith met Dr. J. Watson at 3.30 p.m. today.", ' "Is it late?" he asked!',
      " Yes, e.g. now.", " (It was.)", " Next\n\n", "New paragraph...", " Done"]


def test_chunk_lengths_follow_bolt():
  rng = np.random.default_rng(0)
  counts = thoughts.chunk_sentence_counts(100_000, rng)
  assert sum(counts) == 100_000
  assert max(counts) <= 20 and min(counts) >= 1
  # 1 + Poisson(7), capped at 20 (the cap barely moves the mean).
  assert abs(np.mean(counts[:-1]) - 8.0) < 0.1
  with pytest.raises(ValueError):
    thoughts.chunk_sentence_counts(5, rng, mean_sentences=1)


def test_chunking_is_a_function_of_the_text():
  text = " ".join(f"Sentence number {i} is here." for i in range(300))
  chunks = thoughts.chunk_document(text)
  assert "".join(chunks) == text
  assert chunks == thoughts.chunk_document(text)
  assert 20 < len(chunks) < 60  # ~300 / 8
  assert chunks != thoughts.chunk_document(text, seed=43)
  # A different text draws different lengths (the seed is the text's hash).
  other = thoughts.chunk_document(text.replace("here", "there"))
  lengths = [c.count(".") for c in chunks]
  assert lengths != [c.count(".") for c in other]


def test_layout_forms_and_loss():
  chunks = [("Q: 2*3=", None), ("6", "2*3=6"), (" ok", "")]
  encode = VOCAB.encode
  prior = thoughts.format_thought_document(chunks, VOCAB, np.random.default_rng(0),
                                           prior_prob=1.0)
  v = VOCAB
  expected = ([v.bos_id] + encode("Q: 2*3=") + [v.sol_id, v.prior_id] + encode("2*3=6")
              + [v.eol_id] + encode("6") + encode(" ok") + [v.eos_id])
  np.testing.assert_array_equal(prior["tokens"], expected)
  assert prior["tokens"].dtype == np.int32 and prior["loss_mask"].all()
  posterior = thoughts.format_thought_document(chunks, VOCAB, np.random.default_rng(0),
                                               prior_prob=0.0)
  expected = ([v.bos_id] + encode("Q: 2*3=") + [v.sol_id, v.eol_id] + encode("6")
              + [v.sol_id, v.posterior_id] + encode("2*3=6") + [v.eol_id] + encode(" ok")
              + [v.eos_id])
  np.testing.assert_array_equal(posterior["tokens"], expected)


def test_forms_are_drawn_per_chunk():
  chunks = [(f"x{i}", f"z{i}") for i in range(2000)]
  tokens = thoughts.format_thought_document(chunks, VOCAB, np.random.default_rng(1))["tokens"]
  n_prior = np.sum(tokens == VOCAB.prior_id)
  n_posterior = np.sum(tokens == VOCAB.posterior_id)
  assert n_prior + n_posterior == 2000
  assert abs(n_prior / 2000 - 0.5) < 0.05


def test_records_round_trip(tmp_path):
  path = tmp_path / "t.jsonl"
  docs = [("a", [("One. ", "z1"), ("Two.", None)]), (7, [("Solo", "z")])]
  assert thoughts.write_thought_records(path, docs) == 3
  # Records of a document may come in any order, interleaved with others.
  lines = path.read_text().splitlines()
  path.write_text("\n".join([lines[1], lines[2], lines[0]]) + "\n\n")
  ids, documents = thoughts.read_thought_records(path)
  assert ids == ["a", 7]
  assert documents == [[("One. ", "z1"), ("Two.", None)], [("Solo", "z")]]


@pytest.mark.parametrize("lines, message", [
    (['{"doc_id": 1, "chunk_index": 0, "text": "a"}', "{not json"], r":2: not valid JSON"),
    (['{"doc_id": 1, "text": "a"}'], r":1: missing key 'chunk_index'"),
    (['{"doc_id": 1, "chunk_index": 0, "text": "a"}',
      '{"doc_id": 1, "chunk_index": 0, "text": "b"}'], r":2: .*already given on line 1"),
    (['{"doc_id": 1, "chunk_index": 1, "text": "a"}'], r":1: .*lacks \[0\]"),
    (['{"doc_id": 1, "chunk_index": 0, "text": "a", "thought": 3}'], r":1: thought must be"),
    (['[1, 2]'], r":1: .*JSON object"),
    (['{"doc_id": 1, "chunk_index": 0, "text": "a", "thought_ids": [3, -1]}'],
     r":1: thought_ids must be"),
])
def test_malformed_records_name_file_and_line(tmp_path, lines, message):
  path = tmp_path / "bad.jsonl"
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(thoughts.ThoughtRecordError, match=str(path) + message):
    thoughts.read_thought_records(path)


def test_written_records_are_plain_json(tmp_path):
  path = tmp_path / "t.jsonl"
  thoughts.write_thought_records(path, [("d", [("x", "é")])])
  assert json.loads(path.read_text()) == {"doc_id": "d", "chunk_index": 0, "text": "x",
                                          "thought": "é"}


def test_thought_ids_win_over_the_text_and_train_as_they_are(tmp_path):
  """The E-step writes the ids it sampled: they train exactly, whatever the text re-encodes to."""
  path = tmp_path / "t.jsonl"
  path.write_text('{"doc_id": 1, "chunk_index": 0, "text": "Q", "thought": "zz", '
                  '"thought_ids": [300, 301]}\n')
  _, (doc,) = thoughts.read_thought_records(path)
  assert doc == [("Q", (300, 301))]
  vocab = ByteVocabulary()
  example = thoughts.format_thought_document(doc, vocab, np.random.default_rng(0), prior_prob=1.0)
  assert example["tokens"].tolist() == [vocab.bos_id, vocab.sol_id, vocab.prior_id, 300, 301,
                                        vocab.eol_id, *vocab.encode("Q"), vocab.eos_id]
