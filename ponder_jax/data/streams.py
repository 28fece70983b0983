"""One source's host-local stream of examples, and the packing of streams into rows.

Per source (a `data.sources.<name>` section, see sources.py), a grain MapDataset:
  source -> shuffle(seed) -> repeat (reshuffled every epoch) -> map_with_index(example, thought
  form and pause positions drawn from a generator seeded by (data.seed, source, stream index))
  -> [process_index::process_count]
so item g of a source's stream is the same on every host count, and host h reads items
g = h, h + P, h + 2P, ...: disjoint slices whose union is the one-process stream.
Pause insertion (data.pause.ratio, for the sources whose `pause` resolves true: see sources.py)
grows a document by its pauses and drops none of its tokens. Documents longer than
`data.seq_len`, grown ones included, are cut into consecutive pieces of at most seq_len tokens
(`data.packing.split_long`, else an error naming the source and document): the first piece starts
with bos, only the last ends with eos, and every piece is its own segment, so a continuation is
explicit in the tokens and attention never crosses a cut. Nothing is silently truncated. A
finetune example is never cut (its target would lose its prompt): one longer than seq_len is an
error naming the source.

`pack` runs grain's first-fit (or best-fit) packer over a stream: rows of seq_len tokens, segment
ids from 1, positions restarting at 0, every per-token field packed alike; `stack_rows` turns
packed rows into a host-local `Batch` (batch.py).

Not here: the phase schedule and the iterators (pipeline.py), the config (spec.py), tokenizers
(vocab.py), the thought and pause transforms themselves (thoughts.py, pause.py).
"""

from __future__ import annotations

import zlib
from typing import Any, Mapping, Sequence

import grain
import numpy as np
from absl import logging

from ponder_jax.batch import Batch, padding_values
from ponder_jax.data import pause as pause_lib
from ponder_jax.data import sources as sources_lib
from ponder_jax.data.spec import DataConfig, DataSpec, as_spec
from ponder_jax.data.vocab import Vocabulary
from ponder_jax.validation import check, is_int

PACKERS = {"first_fit": grain.experimental.FirstFitPackIterDataset,
           "best_fit": grain.experimental.BestFitPackIterDataset}
PACKED_FIELDS = ("tokens", "loss_mask", "source_id")  # the per-token fields packed as one array
META = ("doc_index", "doc_source")  # per-row lists: which stream items a row holds


def salt(name: str) -> int:
  """A stable per-name seed offset (a source's shuffle and generators, a phase's bins)."""
  return zlib.crc32(name.encode("utf-8"))


class _Formatter:
  """Stream item g -> token example with pauses, per-token source id and provenance."""

  def __init__(self, source: sources_lib.TokenSource, source_id: int, seed: int,
               pause_ratio: float, pause_id: int, stream: int):
    self._source, self._source_id = source, source_id
    self._seed = (seed, salt(source.name), stream)
    self._pause_ratio = pause_ratio if source.spec.pause else 0.0
    self._pause_id = pause_id
    # Building a generator costs ~20 us an item: only thought layouts and pauses draw from one.
    self._needs_rng = (self._pause_ratio > 0 or source.spec.kind in ("thoughts", "math")
                       or source.spec.options.get("layout") == "thoughts")

  def __call__(self, index: int, indexed_record: tuple[int, Any]) -> dict[str, Any]:
    # One generator per item, so any item regenerates alone: thought forms, then pauses.
    rng = np.random.default_rng([*self._seed, index]) if self._needs_rng else None
    example = self._source.example(indexed_record, rng)
    if self._pause_ratio > 0:
      example = pause_lib.insert_pauses(example, ratio=self._pause_ratio,
                                        pause_id=self._pause_id, rng=rng)
    n = example["tokens"].shape[0]
    example["source_id"] = np.full(n, self._source_id, np.int32)
    example["doc_index"] = index
    example["doc_source"] = self._source_id
    return example


class _Pieces(grain.experimental.FlatMapTransform):
  """Cuts an example longer than seq_len into consecutive pieces (or raises), and with `stack`
  stacks its per-token fields into one [n, 3] 'fields' array (tokens, loss_mask, source_id), so
  the packer places all three with one decision: consistent by construction, and 3x less work."""

  max_fan_out = 1 << 20

  def __init__(self, seq_len: int, split: bool, source_key: str, stack: bool,
               no_split_reason: str = "data.packing.split_long is false"):
    self._seq_len, self._split, self._key, self._stack = seq_len, split, source_key, stack
    self._no_split_reason = no_split_reason

  def flat_map(self, example: dict[str, Any]) -> list[dict[str, Any]]:
    n = example["tokens"].shape[0]
    if n > self._seq_len and not self._split:
      raise ValueError(f"{self._key}: stream item {example['doc_index']} has {n} tokens, more "
                       f"than data.seq_len = {self._seq_len}, and {self._no_split_reason}")
    meta = {k: example[k] for k in META}
    if self._stack:
      per_token = {"fields": np.stack([example[k] for k in PACKED_FIELDS], axis=1)}
    else:
      per_token = {k: example[k] for k in PACKED_FIELDS}
    if n <= self._seq_len:
      return [{**per_token, **meta}]
    return [{**{k: v[start:start + self._seq_len] for k, v in per_token.items()}, **meta}
            for start in range(0, n, self._seq_len)]


def host_stream(spec: DataSpec, source: sources_lib.TokenSource, vocab: Vocabulary, *,
                train: bool, process_index: int, process_count: int, start: int = 0,
                stack: bool = True) -> grain.IterDataset:
  """One source's host-local stream of examples (train: shuffled and repeated; eval: once),
  from its `start`-th host-local item, cut into pieces of at most seq_len tokens; with `stack`
  the per-token fields are one [n, 3] 'fields' array, as `pack` takes them."""
  source_id = spec.source_names.index(source.name)
  ds = grain.MapDataset.source(source)
  if train:
    ds = ds.shuffle(seed=(spec.seed + salt(source.name)) % 2**32).repeat()
  pause_ratio = spec.pause_ratio if (train or spec.pause_in_eval) else 0.0
  ds = ds.map_with_index(_Formatter(source, source_id, spec.seed, pause_ratio, vocab.pause_id,
                                    stream=0 if train else 1))
  ds = ds[process_index::process_count]
  if start:
    ds = ds[start:]
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=spec.read_threads,
                                            prefetch_buffer_size=4 * spec.read_threads))
  if source.spec.kind == "finetune":
    pieces = _Pieces(spec.seq_len, False, source.spec.key, stack,
                     "a finetune example is never cut (its target would lose its prompt)")
  else:
    pieces = _Pieces(spec.seq_len, spec.packing["split_long"], source.spec.key, stack)
  return grain.experimental.FlatMapIterDataset(it, pieces)


def source_stream(data: DataConfig, vocab: Vocabulary, name: str, *, split: str = "train",
                  process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """The examples one host reads from source `name` before mixing (train: the endless shuffled
  stream; eval: the held-out split once): dicts with 'tokens', 'loss_mask', 'source_id' and
  'doc_index' (the item's index g in the one-process stream). For inspection and tests."""
  spec = as_spec(data)
  check_process(process_index, process_count)
  check(name in spec.sources, "data.sources", name, f"no such source; known: {spec.source_names}")
  source = sources_lib.open_source(spec.sources[name], vocab, split)
  return host_stream(spec, source, vocab, train=split == "train",
                     process_index=process_index, process_count=process_count, stack=False)


def pack(spec: DataSpec, ds: grain.IterDataset, vocab: Vocabulary, bins: int, *,
         shuffle_bins: bool, seed_salt: int) -> grain.IterDataset:
  """Rows of seq_len tokens packed from a stacked stream, `bins` rows at a time."""
  padding = padding_values(vocab.pad_id)
  return PACKERS[spec.packing["algorithm"]](
      ds, length_struct={"fields": spec.seq_len}, num_packing_bins=bins,
      shuffle_bins=shuffle_bins, seed=(spec.seed + seed_salt) % 2**32, meta_features=META,
      padding_struct={"fields": np.array([padding[k] for k in PACKED_FIELDS], np.int32)})


def stack_rows(rows: Sequence[Mapping[str, Any]]) -> Batch:
  """Packed rows -> a host-local Batch [len(rows), seq_len]."""
  fields_BxLx3 = np.stack([row["fields"] for row in rows])
  return Batch(
      tokens=fields_BxLx3[..., 0],
      segment_ids=np.stack([row["fields_segment_ids"] for row in rows]).astype(np.int32),
      positions=np.stack([row["fields_positions"] for row in rows]).astype(np.int32),
      loss_mask=fields_BxLx3[..., 1],
      source_id=fields_BxLx3[..., 2])


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  check(is_int(global_batch_size) and global_batch_size > 0
        and global_batch_size % process_count == 0, "global_batch_size", global_batch_size,
        f"must be a positive multiple of the process count {process_count}")
  return global_batch_size // process_count


def check_process(process_index: int, process_count: int) -> None:
  if not (is_int(process_count) and process_count >= 1 and is_int(process_index)
          and 0 <= process_index < process_count):
    raise ValueError(f"process_index {process_index} must lie in [0, {process_count})")


def open_sources(spec: DataSpec, vocab: Vocabulary, names: Sequence[str],
                 split: str) -> dict[str, sources_lib.TokenSource]:
  """The named sources' `split`, opened once; malformed records skipped are reported."""
  opened = {}
  for name in names:
    source = sources_lib.open_source(spec.sources[name], vocab, split)
    if source.num_skipped:
      logging.warning("data.sources.%s: skipped %d malformed records (first: %s)", name,
                      source.num_skipped, source.first_skipped)
    opened[name] = source
  return opened

