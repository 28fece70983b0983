"""Trains data/tokenizer.model, the project's 8192-id SentencePiece BPE vocabulary.

Input: the shipped Shakespeare sample plus the first records of the synthetic math corpus's train
split (question, answer and thought), so both the default text and the latent-thought testbed
tokenize well. The reserved ids (pad, bos, eos, unk, pause, the four latent-thought tokens and 256
procedural symbols) come first, as laid out in ponder_jax/data/vocab.py, then the 256 byte pieces,
then the learned pieces. Digits are split; text round-trips exactly (identity normalisation, no
dummy prefix, whitespace kept, byte fallback for any character).

Deterministic: fixed input order, no sampling, one trainer thread; the same inputs give the same
model bytes. Usage (from the repository root; about a second):

  .venv/bin/python data/train_tokenizer.py                      # writes data/tokenizer.model
  .venv/bin/python data/train_tokenizer.py --output /tmp/tok.model --text my.txt --math-records 0
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path
from typing import Iterable, Sequence

import sentencepiece as spm

from ponder_jax.data import data_dir
from ponder_jax.data.math_corpus import MathCorpus, MathCorpusConfig
from ponder_jax.data.vocab import SENTENCEPIECE_VOCAB_SIZE, SPECIAL_PIECES, control_pieces

DEFAULT_MATH_RECORDS = 4000
# SentencePiece reads "sentences"; paragraphs keep their newlines so pieces can learn "\n".
_PARAGRAPH = re.compile(r".+?(?:\n\n+|\Z)", re.DOTALL)


def text_sentences(text: str) -> list[str]:
  """The text cut after each blank-line run; the pieces concatenate back to the text."""
  return _PARAGRAPH.findall(text)


def math_sentences(num_records: int) -> list[str]:
  corpus = MathCorpus(MathCorpusConfig(validation_size=0, test_size=0), "train")
  sentences = []
  for index in range(num_records):
    record = corpus[index]
    sentences += [record["text"], record["thought"]]
  return sentences


def train(sentences: Iterable[str], vocab_size: int = SENTENCEPIECE_VOCAB_SIZE) -> bytes:
  """The serialized model trained on `sentences` with the reserved layout."""
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
      model_type="bpe",
      pad_id=0, bos_id=1, eos_id=2, unk_id=3,
      pad_piece=SPECIAL_PIECES["pad"], bos_piece=SPECIAL_PIECES["bos"],
      eos_piece=SPECIAL_PIECES["eos"], unk_piece=SPECIAL_PIECES["unk"],
      control_symbols=control_pieces(),  # ids 4 .. 264, never produced by encode
      byte_fallback=True, split_digits=True, character_coverage=1.0,
      normalization_rule_name="identity", remove_extra_whitespaces=False,
      add_dummy_prefix=False, allow_whitespace_only_pieces=True,
      max_sentence_length=1 << 16, input_sentence_size=0, shuffle_input_sentence=False,
      num_threads=1,  # the merge order depends on the thread count
      minloglevel=2)
  return model.getvalue()


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--output", type=Path, default=data_dir() / "tokenizer.model")
  parser.add_argument("--text", type=Path, action="append",
                      help="plain-text training file (repeatable); default data/shakespeare.txt")
  parser.add_argument("--math-records", type=int, default=DEFAULT_MATH_RECORDS,
                      help="synthetic math records to add (text and thought of each)")
  parser.add_argument("--vocab-size", type=int, default=SENTENCEPIECE_VOCAB_SIZE)
  args = parser.parse_args(argv)
  sentences = []
  for path in args.text or [data_dir() / "shakespeare.txt"]:
    sentences += text_sentences(path.read_text(encoding="utf-8"))
  sentences += math_sentences(args.math_records)
  args.output.write_bytes(train(sentences, args.vocab_size))
  print(f"wrote {args.output} ({args.vocab_size} ids, {len(sentences)} training sentences)")


if __name__ == "__main__":
  main(sys.argv[1:])
