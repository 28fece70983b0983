"""Latent-thought documents: chunking, the thought-record file format and the BoLT training layout
(METHODS.md §4.1).

A *thought document* is a list of chunks `(text, thought)`: the chunk texts concatenated give the
document back, `thought` is the latent thought Z behind that chunk or None. Three things live here:

1. Chunking plain text for the E-step (`chunk_document`): paragraphs, then sentences (a regex
   splitter, since NLTK's punkt data cannot be downloaded here), grouped into chunks of
   1 + Poisson(7) sentences capped at 20, with a generator seeded by the text's MD5 plus a chunk
   seed, as BoLT's `chunk_gen.py` does. The chunking is a pure function of the text, so every
   host and every E-step iteration cuts a document the same way.
2. Thought records (`read_thought_records`, `write_thought_records`): the JSONL format the E-step
   writes and the pipeline reads. One JSON object per line and per chunk:
       {"doc_id": "shakespeare/17", "chunk_index": 0, "text": "...", "thought": "..." | null}
   `doc_id` is a string or integer naming the document; a document's records carry chunk_index
   0, 1, ..., n - 1 exactly once each, in any order and interleaved with other documents';
   `text` is the chunk's raw text (spacing included, so the texts concatenate to the document);
   `thought` is a string or null (null or "" = no thought; the chunk is trained raw). An optional
   `thought_ids` (a list of token ids) wins over `thought`: the E-step writes the ids it sampled
   and weighted, which decoding to text and encoding again need not give back. Documents come
   out in the order of their first record. Other keys (e.g. importance weights) are ignored.
3. The training layout (`format_thought_document`): per chunk with a thought, independently,
   the prior form `<SoL><PRIOR> Z <EoL> X` with probability `prior_prob` (0.5 in BoLT), else the
   posterior form `<SoL><EoL> X <SoL><POSTERIOR> Z <EoL>`; chunks without a thought stay raw;
   bos ... eos around the document; the loss is on every token, thoughts included, as BoLT.

Not here: where documents come from (sources.py), mixing and packing (pipeline.py), sampling
thoughts from a model (the E-step).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Iterable, Sequence

import numpy as np

from ponder_jax.data.vocab import Vocabulary

Chunk = tuple[str, "str | tuple[int, ...] | None"]  # thought: text, or token ids
ThoughtDocument = list[Chunk]

# BoLT's defaults (`chunk_gen.py`: units_per_chunk 8, min 1, max 20, chunk_seed 42): a chunk has
# min + Poisson(mean - min) sentences, at most `max_sentences`.
MEAN_SENTENCES = 8
MIN_SENTENCES = 1
MAX_SENTENCES = 20
CHUNK_SEED = 42

# A paragraph runs to a blank line (the blank line and any trailing spaces stay with it).
_PARAGRAPH = re.compile(r"[^\n\r].*?(?:\n[ \t\r\f\v]*\n\s*|\s*$)", re.DOTALL)
# A sentence ends at . ! ? (repeats allowed) and any closing quotes or brackets, when whitespace
# follows. The whitespace starts the next sentence, so sentences concatenate back to the text.
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u2019\u201d)\]]*(?=\s)")
_NEXT_CHAR = re.compile(r"\s*(\S?)")
# Abbreviations whose full stop does not end a sentence.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st sr jr vs etc e.g i.e cf fig no vol al approx ca".split())


def split_paragraphs(text: str) -> list[str]:
  """Paragraphs of `text` (blank-line separated); they concatenate back to `text` minus any
  leading newlines."""
  return _PARAGRAPH.findall(text)


def split_sentences(text: str) -> list[str]:
  """Sentence units of `text`: paragraphs, then sentences within each; `"".join` gives `text`
  back (leading newlines excepted). Whitespace between sentences starts the next unit.

  No sentence ends before a word in lower case ('"Why?" he asked', "e.g. this"), nor at a full
  stop after a listed abbreviation, a single letter (initials) or a number.
  """
  units: list[str] = []
  for paragraph in split_paragraphs(text):
    start = 0
    for match in _SENTENCE_END.finditer(paragraph):
      end = match.end()
      word = paragraph[start:match.start()].rsplit(None, 1)[-1:] or [""]
      word = word[0].lower().lstrip("(\"'")
      following = _NEXT_CHAR.match(paragraph, end).group(1)
      if following.islower() or (match.group().startswith(".") and (
          word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()) or word.isdigit())):
        continue
      if following:
        units.append(paragraph[start:end])
        start = end
    units.append(paragraph[start:])
  return [u for u in units if u]


def chunk_sentence_counts(num_sentences: int, rng: np.random.Generator, *,
                          mean_sentences: int = MEAN_SENTENCES, min_sentences: int = MIN_SENTENCES,
                          max_sentences: int = MAX_SENTENCES) -> list[int]:
  """Sentences per chunk: min + Poisson(mean - min), capped at max and at what is left."""
  if not 0 < min_sentences < mean_sentences <= max_sentences:
    raise ValueError("need 0 < min_sentences < mean_sentences <= max_sentences, got "
                     f"{min_sentences}, {mean_sentences}, {max_sentences}")
  counts, left = [], num_sentences
  while left > 0:
    n = int(rng.poisson(mean_sentences - min_sentences)) + min_sentences
    n = min(n, max_sentences, left)
    counts.append(n)
    left -= n
  return counts


def text_rng(text: str, seed: int = CHUNK_SEED) -> np.random.Generator:
  """The generator BoLT seeds from a text: (MD5(text) + seed) mod 2**32, so chunking depends on
  the text alone (not on sharding or order)."""
  digest = int(hashlib.md5(text.encode("utf-8")).hexdigest(), 16)
  return np.random.default_rng((digest + seed) & 0xFFFFFFFF)


def chunk_document(text: str, *, seed: int = CHUNK_SEED, mean_sentences: int = MEAN_SENTENCES,
                   min_sentences: int = MIN_SENTENCES,
                   max_sentences: int = MAX_SENTENCES) -> list[str]:
  """Chunks of `text` for the E-step: groups of consecutive sentences (see the module doc)."""
  units = split_sentences(text)
  counts = chunk_sentence_counts(len(units), text_rng(text, seed), mean_sentences=mean_sentences,
                                 min_sentences=min_sentences, max_sentences=max_sentences)
  bounds = np.concatenate([[0], np.cumsum(counts)]).astype(int)
  return ["".join(units[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


# Thought records -------------------------------------------------------------------------------


class ThoughtRecordError(ValueError):
  """A thought-record file is malformed; the message names the file and line."""


def _thought_or_none(thought) -> str | None:
  return thought if thought else None


def read_thought_records(path: str | os.PathLike) -> tuple[list[str | int], list[ThoughtDocument]]:
  """(doc_ids, documents) from a thought-record JSONL file (format in the module docstring).

  Raises ThoughtRecordError naming the file and line of a malformed record, a duplicate chunk
  index, or a document whose chunk indices have a gap.
  """
  path = os.fspath(path)
  chunks: dict[str | int, dict[int, tuple[Chunk, int]]] = {}
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{path}:{line_no}"
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ThoughtRecordError(f"{where}: not valid JSON ({e.msg})") from None
      if not isinstance(record, dict):
        raise ThoughtRecordError(f"{where}: a thought record must be a JSON object")
      for key in ("doc_id", "chunk_index", "text"):
        if key not in record:
          raise ThoughtRecordError(f"{where}: missing key '{key}'")
      doc_id, index, text = record["doc_id"], record["chunk_index"], record["text"]
      thought = record.get("thought")
      if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
        raise ThoughtRecordError(f"{where}: doc_id must be a string or integer, got {doc_id!r}")
      if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ThoughtRecordError(f"{where}: chunk_index must be an integer >= 0, got {index!r}")
      if not isinstance(text, str):
        raise ThoughtRecordError(f"{where}: text must be a string, got {type(text).__name__}")
      if thought is not None and not isinstance(thought, str):
        raise ThoughtRecordError(f"{where}: thought must be a string or null, "
                                 f"got {type(thought).__name__}")
      if record.get("thought_ids") is not None:
        ids = record["thought_ids"]
        if not (isinstance(ids, list) and all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)):
          raise ThoughtRecordError(f"{where}: thought_ids must be a list of token ids >= 0")
        thought = tuple(ids)
      doc = chunks.setdefault(doc_id, {})
      if index in doc:
        raise ThoughtRecordError(f"{where}: doc_id {doc_id!r} chunk_index {index} already given "
                                 f"on line {doc[index][1]}")
      doc[index] = ((text, _thought_or_none(thought)), line_no)
  documents = []
  for doc_id, doc in chunks.items():
    missing = sorted(set(range(len(doc))) - set(doc))
    if missing:
      last_line = max(line for _, line in doc.values())
      raise ThoughtRecordError(f"{path}:{last_line}: doc_id {doc_id!r} has chunk indices "
                               f"{sorted(doc)} but lacks {missing[:5]}")
    documents.append([doc[i][0] for i in range(len(doc))])
  return list(chunks), documents


def write_thought_records(path: str | os.PathLike,
                          documents: Iterable[tuple[str | int, Sequence[Chunk]]]) -> int:
  """Writes (doc_id, chunks) pairs as thought records; returns the number of records."""
  count = 0
  with open(path, "w", encoding="utf-8") as f:
    for doc_id, chunks in documents:
      for index, (text, thought) in enumerate(chunks):
        record = {"doc_id": doc_id, "chunk_index": index, "text": text, "thought": thought}
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
  return count


# Training layout -------------------------------------------------------------------------------


def format_thought_document(chunks: Sequence[Chunk], vocab: Vocabulary, rng: np.random.Generator,
                            *, prior_prob: float = 0.5) -> dict[str, np.ndarray]:
  """Token example of a thought document: bos, each chunk in its drawn form, eos; loss on all.

  One uniform draw per chunk with a thought, in chunk order, picks the form (< prior_prob: prior).
  A thought is text (encoded here) or token ids (used as they are).
  """
  v = vocab
  pieces: list[list[int]] = [[v.bos_id]]
  for text, thought in chunks:
    x = v.encode(text)
    if not thought:
      pieces.append(x)
      continue
    z = v.encode(thought) if isinstance(thought, str) else list(thought)
    if rng.random() < prior_prob:
      pieces += [[v.sol_id, v.prior_id], z, [v.eol_id], x]
    else:
      pieces += [[v.sol_id, v.eol_id], x, [v.sol_id, v.posterior_id], z, [v.eol_id]]
  pieces.append([v.eos_id])
  tokens = np.fromiter((t for piece in pieces for t in piece), np.int32)
  return {"tokens": tokens, "loss_mask": np.ones_like(tokens)}
