"""The grain input pipeline the trainer consumes: sources -> token examples -> thought layout ->
pause insertion -> per-host slice -> mixture on a step schedule -> packing -> host-local batches
-> global jax.Arrays (DESIGN.md "How data flows"; MaxText's grain pipeline is the model).

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

Phases (`data.phases.<name>`: `steps` and `weights` = {source: positive weight}) run in the order
`data.phase_order`; every phase but the last lasts `steps` steps (0 skips it), the last runs to
the end (its `steps` must be 0). Within a phase, `IterDataset.mix` draws *documents* in exact
proportion to the weights, then grain's first-fit packer fills rows of seq_len tokens (segment ids
from 1, positions restart at 0, every per-token field packed alike), and rows are stacked into
host-local batches. A source used by several phases continues where the previous phase's last
emitted document left it (the semantic stream is one fixed sequence; phases change only the mix).
`total_train_steps` applies `data.budget`: 'additive' puts the warm-up phases' steps on top of
train.steps, 'substitutive' keeps train.steps in total.

Host-local batch (int32 numpy arrays [B_local, seq_len]):
  tokens       ids; padding is vocab.pad_id
  segment_ids  1, 2, ... per packed document or piece; 0 = padding
  positions    position within the segment; 0 on padding
  loss_mask    1 where the token is a training target (procedural output spans, finetune
               targets, everything for text and thoughts); 0 on padding and on pauses
  source_id    index into `source_names(data_cfg)` of the source of each token; -1 on padding
The train iterator is a grain DatasetIterator: `get_state`/`set_state` (and orbax through
`grain.checkpoint.CheckpointHandler`) capture the step, the phase and every grain position, so a
restored iterator yields the identical stream, across phase switches too.

Not here: tokenizers (vocab.py), generators (procedural.py, math_corpus.py), the thought and pause
transforms themselves (thoughts.py, pause.py), and the training loop.
"""

from __future__ import annotations

import atexit
import dataclasses
import math
import weakref
import zlib
from typing import Any, Mapping, Sequence

import grain
import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from ponder_jax.data import pause as pause_lib
from ponder_jax.data import sources as sources_lib
from ponder_jax.data.vocab import Vocabulary
from ponder_jax.sharding import BATCH, batch_sharding
from ponder_jax.validation import check

BUDGETS = ("additive", "substitutive")
PACKERS = {"first_fit": grain.experimental.FirstFitPackIterDataset,
           "best_fit": grain.experimental.BestFitPackIterDataset}
BATCH_KEYS = ("tokens", "segment_ids", "positions", "loss_mask", "source_id")
_PACKED_FIELDS = ("tokens", "loss_mask", "source_id")
_META = ("doc_index", "doc_source")  # per-row lists: which stream items a row holds
_TOP_KEYS = ("vocab", "seq_len", "seed", "budget", "phase_order", "sources", "phases", "pause",
             "packing", "read_threads", "prefetch_batches")
_PAUSE_KEYS = ("ratio", "in_eval")
_PACKING_KEYS = ("algorithm", "bins", "shuffle_bins", "split_long")


# Config --------------------------------------------------------------------------------------


def phase_config(steps: int = 0, **weights: float) -> ml_collections.ConfigDict:
  """A `data.phases.<name>` section: `steps` (0: skipped, or the last phase) and weights."""
  return ml_collections.ConfigDict({"steps": steps, "weights": dict(weights)})


def default_data_config() -> ml_collections.ConfigDict:
  """The `data` section: the shipped Shakespeare text alone, one phase, no pauses.

  Every key can be overridden on the command line (`--config.data.seq_len=512`); new sources and
  phases are added in an experiment config with `sources.source_config` and `phase_config`.
  """
  c = ml_collections.ConfigDict()
  c.vocab = "sentencepiece"  # spec for vocab.load_vocabulary
  c.seq_len = 256  # tokens per packed row
  c.seed = 0  # shuffles, thought forms, pause positions, bin order
  c.budget = "additive"  # how warm-up phases count against train.steps (see total_train_steps)
  c.phase_order = "main"  # comma-separated names of data.phases, in the order they run
  c.sources = ml_collections.ConfigDict({"shakespeare": sources_lib.source_config("text")})
  c.phases = ml_collections.ConfigDict({"main": phase_config(0, shakespeare=1.0)})
  c.pause = ml_collections.ConfigDict({
      "ratio": 0.0,  # pauses per token inserted in pretraining (METHODS.md §2.1: 0.1)
      "in_eval": False,  # False: eval streams score every arm on the same real tokens
  })
  c.packing = ml_collections.ConfigDict({
      "algorithm": "first_fit",  # or best_fit
      "bins": 0,  # rows packed at once; 0: the host-local batch size
      "shuffle_bins": True,
      "split_long": True,  # cut documents longer than seq_len into pieces (else an error)
  })
  c.read_threads = 0  # grain read threads per source (0: read in the consuming thread)
  c.prefetch_batches = 2  # batches packed ahead in a background thread (0: none)
  return c


@dataclasses.dataclass(frozen=True)
class PhaseSpec:
  name: str
  steps: int
  weights: Mapping[str, float]


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """A validated `data` section."""
  vocab: str
  seq_len: int
  seed: int
  budget: str
  sources: Mapping[str, sources_lib.SourceSpec]
  phases: tuple[PhaseSpec, ...]
  pause_ratio: float
  pause_in_eval: bool
  packing: Mapping[str, Any]
  read_threads: int
  prefetch_batches: int

  @property
  def source_names(self) -> tuple[str, ...]:
    return tuple(sorted(self.sources))

  @property
  def warmup_steps(self) -> int:
    return sum(p.steps for p in self.phases[:-1])

  def schedule(self) -> list[tuple[int, int, int | None]]:
    """(phase index, first step, end step or None) of every phase that runs."""
    out, start = [], 0
    for i, phase in enumerate(self.phases):
      last = i == len(self.phases) - 1
      if last:
        out.append((i, start, None))
      elif phase.steps > 0:
        out.append((i, start, start + phase.steps))
        start += phase.steps
    return out


def _is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _section(cfg: Any, key: str, known: Sequence[str]) -> dict[str, Any]:
  section = sources_lib.section_dict(cfg)
  for name in section:
    check(name in known, f"{key}.{name}", section[name],
          f"unknown key; known keys are {sorted(known)}")
  return section


def validate_data_config(cfg: Any) -> DataSpec:
  """Validates the `data` section once at start; raises ConfigError naming the bad key.

  Checks every source's kind, keys, task and files (without reading the data), the phases, their
  order and weights, the budget, pause and packing settings.
  """
  c = {**default_data_config().to_dict(), **_section(cfg, "data", _TOP_KEYS)}
  check(isinstance(c["vocab"], str) and bool(c["vocab"]), "data.vocab", c["vocab"],
        "must be a vocabulary spec such as 'sentencepiece' or 'byte'")
  check(_is_int(c["seq_len"]) and c["seq_len"] >= 2, "data.seq_len", c["seq_len"],
        "must be an integer >= 2")
  check(_is_int(c["seed"]) and 0 <= c["seed"] < 2**32, "data.seed", c["seed"],
        "must be an integer in [0, 2**32)")
  check(c["budget"] in BUDGETS, "data.budget", c["budget"], f"must be one of {BUDGETS}")
  for key in ("read_threads", "prefetch_batches"):
    check(_is_int(c[key]) and c[key] >= 0, f"data.{key}", c[key], "must be an integer >= 0")

  source_sections = sources_lib.section_dict(c["sources"])
  check(bool(source_sections), "data.sources", source_sections, "defines no source")
  sources = {name: sources_lib.validate_source(name, section)
             for name, section in source_sections.items()}

  phase_sections = sources_lib.section_dict(c["phases"])
  check(bool(phase_sections), "data.phases", phase_sections, "defines no phase")
  order = [name.strip() for name in str(c["phase_order"]).split(",") if name.strip()]
  if not order and len(phase_sections) == 1:
    order = list(phase_sections)
  check(sorted(order) == sorted(phase_sections) and len(set(order)) == len(order),
        "data.phase_order", c["phase_order"],
        f"must name every phase of data.phases exactly once ({sorted(phase_sections)})")
  phases = []
  for i, name in enumerate(order):
    key = f"data.phases.{name}"
    section = _section(phase_sections[name], key, ("steps", "weights"))
    steps = section.get("steps", 0)
    weights = sources_lib.section_dict(section.get("weights", {}))
    last = i == len(order) - 1
    check(_is_int(steps) and steps >= 0, f"{key}.steps", steps, "must be an integer >= 0")
    check(not last or steps == 0, f"{key}.steps", steps,
          "the last phase runs to the end of training: its steps must be 0")
    check(bool(weights), f"{key}.weights", weights, "names no source")
    for source, weight in weights.items():
      check(source in sources, f"{key}.weights.{source}", weight,
            f"no such source; data.sources defines {sorted(sources)}")
      check(isinstance(weight, (int, float)) and not isinstance(weight, bool)
            and math.isfinite(weight) and weight > 0, f"{key}.weights.{source}", weight,
            "must be a positive number")
    phases.append(PhaseSpec(name, int(steps), {k: float(v) for k, v in weights.items()}))

  p = {**default_data_config().pause.to_dict(), **_section(c["pause"], "data.pause", _PAUSE_KEYS)}
  check(isinstance(p["ratio"], (int, float)) and 0.0 <= p["ratio"] < 1.0, "data.pause.ratio",
        p["ratio"], "must lie in [0, 1)")
  check(isinstance(p["in_eval"], bool), "data.pause.in_eval", p["in_eval"],
        "must be true or false")
  k = {**default_data_config().packing.to_dict(),
       **_section(c["packing"], "data.packing", _PACKING_KEYS)}
  check(k["algorithm"] in PACKERS, "data.packing.algorithm", k["algorithm"],
        f"must be one of {sorted(PACKERS)}")
  check(_is_int(k["bins"]) and k["bins"] >= 0, "data.packing.bins", k["bins"],
        "must be an integer >= 0 (0: the host-local batch size)")
  for key in ("shuffle_bins", "split_long"):
    check(isinstance(k[key], bool), f"data.packing.{key}", k[key], "must be true or false")
  return DataSpec(vocab=c["vocab"], seq_len=int(c["seq_len"]), seed=int(c["seed"]),
                  budget=c["budget"], sources=sources, phases=tuple(phases),
                  pause_ratio=float(p["ratio"]), pause_in_eval=p["in_eval"], packing=k,
                  read_threads=int(c["read_threads"]),
                  prefetch_batches=int(c["prefetch_batches"]))


def _spec(data_cfg: Any) -> DataSpec:
  return data_cfg if isinstance(data_cfg, DataSpec) else validate_data_config(data_cfg)


def source_names(data_cfg: Any) -> list[str]:
  """Source names in `source_id` order (for per-source metrics)."""
  return list(_spec(data_cfg).source_names)


def total_train_steps(data_cfg: Any, train_steps: int) -> int:
  """Steps the trainer runs for a semantic budget of `train_steps`.

  additive:     train_steps + the warm-up phases' steps (procedural data on top of the budget)
  substitutive: train_steps (the warm-up phases replace the first part of the budget)
  """
  spec = _spec(data_cfg)
  check(_is_int(train_steps) and train_steps > 0, "train.steps", train_steps,
        "must be a positive integer")
  if spec.budget == "additive":
    return int(train_steps) + spec.warmup_steps
  check(spec.warmup_steps < train_steps, "data.budget", spec.budget,
        f"substitutive warm-up phases take {spec.warmup_steps} steps, which leaves none of "
        f"train.steps = {train_steps} for the last phase")
  return int(train_steps)


# Streams ---------------------------------------------------------------------------------------


def _salt(name: str) -> int:
  return zlib.crc32(name.encode("utf-8"))


class _Formatter:
  """Stream item g -> token example with pauses, per-token source id and provenance."""

  def __init__(self, source: sources_lib.TokenSource, source_id: int, seed: int,
               pause_ratio: float, pause_id: int, stream: int):
    self._source, self._source_id = source, source_id
    self._seed = (seed, _salt(source.name), stream)
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
    meta = {k: example[k] for k in _META}
    if self._stack:
      per_token = {"fields": np.stack([example[k] for k in _PACKED_FIELDS], axis=1)}
    else:
      per_token = {k: example[k] for k in _PACKED_FIELDS}
    if n <= self._seq_len:
      return [{**per_token, **meta}]
    return [{**{k: v[start:start + self._seq_len] for k, v in per_token.items()}, **meta}
            for start in range(0, n, self._seq_len)]


def _source_stream(spec: DataSpec, source: sources_lib.TokenSource, vocab: Vocabulary, *,
                   train: bool, process_index: int, process_count: int, start: int = 0,
                   stack: bool = True) -> grain.IterDataset:
  """One source's host-local stream of examples (train: shuffled and repeated; eval: once)."""
  source_id = spec.source_names.index(source.name)
  ds = grain.MapDataset.source(source)
  if train:
    ds = ds.shuffle(seed=(spec.seed + _salt(source.name)) % 2**32).repeat()
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


def source_stream(data_cfg: Any, vocab: Vocabulary, name: str, *, split: str = "train",
                  process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """The examples one host reads from source `name` before mixing (train: the endless shuffled
  stream; eval: the held-out split once): dicts with 'tokens', 'loss_mask', 'source_id' and
  'doc_index' (the item's index g in the one-process stream). For inspection and tests."""
  spec = _spec(data_cfg)
  _check_process(process_index, process_count)
  check(name in spec.sources, "data.sources", name, f"no such source; known: {spec.source_names}")
  source = sources_lib.open_source(spec.sources[name], vocab, split)
  return _source_stream(spec, source, vocab, train=split == "train",
                        process_index=process_index, process_count=process_count, stack=False)


def _pack(spec: DataSpec, ds: grain.IterDataset, vocab: Vocabulary, bins: int, *,
          shuffle_bins: bool, salt: int) -> grain.IterDataset:
  return PACKERS[spec.packing["algorithm"]](
      ds, length_struct={"fields": spec.seq_len}, num_packing_bins=bins,
      shuffle_bins=shuffle_bins, seed=(spec.seed + salt) % 2**32, meta_features=_META,
      padding_struct={"fields": np.array([vocab.pad_id, 0, -1], np.int32)})


def _stack_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
  fields_BxLx3 = np.stack([row["fields"] for row in rows])
  return {"tokens": fields_BxLx3[..., 0], "segment_ids": np.stack(
      [row["fields_segment_ids"] for row in rows]).astype(np.int32),
          "positions": np.stack([row["fields_positions"] for row in rows]).astype(np.int32),
          "loss_mask": fields_BxLx3[..., 1], "source_id": fields_BxLx3[..., 2]}


def empty_batch(batch_size: int, seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
  """An all-padding batch (no segment, no weighted target)."""
  zeros = np.zeros((batch_size, seq_len), np.int32)
  return {"tokens": np.full_like(zeros, pad_id), "segment_ids": zeros, "positions": zeros.copy(),
          "loss_mask": zeros.copy(), "source_id": np.full_like(zeros, -1)}


def _local_batch_size(global_batch_size: int, process_count: int) -> int:
  check(_is_int(global_batch_size) and global_batch_size > 0
        and global_batch_size % process_count == 0, "global_batch_size", global_batch_size,
        f"must be a positive multiple of the process count {process_count}")
  return global_batch_size // process_count


def _check_process(process_index: int, process_count: int) -> None:
  if not (_is_int(process_count) and process_count >= 1 and _is_int(process_index)
          and 0 <= process_index < process_count):
    raise ValueError(f"process_index {process_index} must lie in [0, {process_count})")


# Train iterator --------------------------------------------------------------------------------

# Prefetch threads must stop before the interpreter tears modules down, or grain's own cleanup
# fails noisily at exit; live iterators are closed first.
_LIVE_ITERATORS: "weakref.WeakSet[TrainIterator]" = weakref.WeakSet()


@atexit.register
def _close_live_iterators() -> None:
  for iterator in list(_LIVE_ITERATORS):
    iterator.close()



class TrainIterator(grain.DatasetIterator):
  """Host-local batches, one per train step, phase by phase; checkpointable (see module doc).

  State: {'step', 'phase' (index into the schedule), 'phase_start' ({source: first host-local
  item the phase read}), 'next_item' ({source: host-local item after the last one emitted}),
  'inner' (the grain state of the current phase's packed stream)}.
  """

  def __init__(self, spec: DataSpec, vocab: Vocabulary, sources: Mapping[str, Any], *,
               batch_size: int, process_index: int, process_count: int):
    super().__init__()
    self._spec, self._vocab, self._sources = spec, vocab, sources
    self._batch_size = batch_size
    self._process_index, self._process_count = process_index, process_count
    self._schedule = spec.schedule()
    self._step, self._phase = 0, 0
    self._next_item: dict[str, int] = {}
    self._phase_start: dict[str, int] = {}
    self._inner = self._open_phase()
    _LIVE_ITERATORS.add(self)

  @property
  def step(self) -> int:
    return self._step

  @property
  def phase_name(self) -> str:
    return self._spec.phases[self._schedule[self._phase][0]].name

  def _open_phase(self) -> grain.DatasetIterator:
    phase_index = self._schedule[self._phase][0]
    phase = self._spec.phases[phase_index]
    streams = {}
    for name in sorted(phase.weights):
      start = self._phase_start.setdefault(name, self._next_item.get(name, 0))
      streams[name] = _source_stream(self._spec, self._sources[name], self._vocab, train=True,
                                     process_index=self._process_index,
                                     process_count=self._process_count, start=start)
    if len(streams) == 1:
      mixed = next(iter(streams.values()))
    else:
      mixed = grain.IterDataset.mix(streams, {n: phase.weights[n] for n in streams})
    bins = self._spec.packing["bins"] or self._batch_size
    packed = _pack(self._spec, mixed, self._vocab, bins,
                   shuffle_bins=self._spec.packing["shuffle_bins"], salt=_salt(phase.name))
    if self._spec.prefetch_batches:
      packed = grain.experimental.ThreadPrefetchIterDataset(
          packed, prefetch_buffer_size=self._spec.prefetch_batches * self._batch_size)
    return iter(packed)

  def _advance_phase(self) -> None:
    self.close()
    self._phase += 1
    self._phase_start = {}
    self._inner = self._open_phase()

  def __next__(self) -> dict[str, np.ndarray]:
    if self._inner is None:
      raise ValueError("the train iterator is closed")
    while (end := self._schedule[self._phase][2]) is not None and self._step >= end:
      self._advance_phase()
    rows = [next(self._inner) for _ in range(self._batch_size)]
    names = self._spec.source_names
    for row in rows:
      for item, source_id in zip(row["doc_index"], row["doc_source"]):
        name = names[source_id]
        local = (int(item) - self._process_index) // self._process_count
        self._next_item[name] = max(self._next_item.get(name, 0), local + 1)
    self._step += 1
    return _stack_rows(rows)

  def get_state(self) -> dict[str, Any]:
    return {"step": self._step, "phase": self._phase, "phase_start": dict(self._phase_start),
            "next_item": dict(self._next_item), "inner": self._inner_state()}

  def _inner_state(self) -> Any:
    if self._inner is None:
      raise ValueError("the train iterator is closed")
    return self._inner.get_state()

  def set_state(self, state: Mapping[str, Any]) -> None:
    self.close()
    self._step, self._phase = int(state["step"]), int(state["phase"])
    self._phase_start = {k: int(v) for k, v in state["phase_start"].items()}
    self._next_item = {k: int(v) for k, v in state["next_item"].items()}
    self._inner = self._open_phase()
    self._inner.set_state(state["inner"])

  def set_state_from_hosts(self, states: Sequence[Mapping[str, Any]]) -> None:
    """Continues a stream that `len(states)` hosts were reading (states in process order).

    For a resume on a different process count: each source restarts at the first global item
    no old host had reached yet (items g of host h were g = h, h + P, ...), split over this
    run's hosts; the step and phase carry over. A few documents per source that some old host
    had read beyond that point are read again, and documents left in old packing buffers are
    dropped; nothing else repeats or is skipped.
    """
    old_count = len(states)
    step, phase = int(states[0]["step"]), int(states[0]["phase"])
    if any(int(s["step"]) != step or int(s["phase"]) != phase for s in states):
      raise ValueError(f"the hosts' data states disagree on step/phase: "
                       f"{[(s['step'], s['phase']) for s in states]}")
    names = {name for s in states for name in s["next_item"]}
    resume_at = {name: min(h + old_count * int(s["next_item"].get(name, 0))
                           for h, s in enumerate(states)) for name in names}
    self.close()
    self._step, self._phase, self._phase_start = step, phase, {}
    self._next_item = {name: max(-(-(g - self._process_index) // self._process_count), 0)
                       for name, g in resume_at.items()}
    self._inner = self._open_phase()

  def start_prefetch(self) -> None:
    if self._inner is not None:
      self._inner.start_prefetch()

  def close(self) -> None:
    """Stops prefetching; the iterator yields nothing more until `set_state`."""
    if self._inner is not None:
      self._inner.close()
      self._inner = None  # released now, while the interpreter is whole (see _LIVE_ITERATORS)

  def __str__(self) -> str:
    return f"TrainIterator(step={self._step}, phase={self.phase_name!r})"


def _open_sources(spec: DataSpec, vocab: Vocabulary, names: Sequence[str],
                  split: str) -> dict[str, sources_lib.TokenSource]:
  opened = {}
  for name in names:
    source = sources_lib.open_source(spec.sources[name], vocab, split)
    if source.num_skipped:
      logging.warning("data.sources.%s: skipped %d malformed records (first: %s)", name,
                      source.num_skipped, source.first_skipped)
    opened[name] = source
  return opened


def make_train_iterator(data_cfg: Any, vocab: Vocabulary, *, global_batch_size: int,
                        process_index: int = 0, process_count: int = 1) -> TrainIterator:
  """The host-local train iterator: each `next()` is one step's batch of
  global_batch_size / process_count rows (see the module docstring for the fields)."""
  spec = _spec(data_cfg)
  _check_process(process_index, process_count)
  batch_size = _local_batch_size(global_batch_size, process_count)
  used = sorted({name for phase in spec.phases for name in phase.weights})
  return TrainIterator(spec, vocab, _open_sources(spec, vocab, used, "train"),
                       batch_size=batch_size, process_index=process_index,
                       process_count=process_count)


def eval_source_names(data_cfg: Any) -> list[str]:
  """Sources with a held-out split, i.e. the keys of `make_eval_iterators`."""
  spec = _spec(data_cfg)
  return [n for n in spec.source_names if sources_lib.has_eval_split(spec.sources[n])]


def make_eval_iterators(data_cfg: Any, vocab: Vocabulary, *, global_batch_size: int,
                        process_index: int = 0, process_count: int = 1,
                        num_batches: int) -> dict[str, list[dict[str, np.ndarray]]]:
  """Per source with a held-out split: `num_batches` host-local batches of its first documents,
  deterministic (no shuffle; pauses only with data.pause.in_eval) and the same on every run.

  Every host returns exactly `num_batches` batches, so evaluation steps stay in lockstep; when a
  held-out split runs out, the remaining batches are all padding (they carry no weight).
  """
  spec = _spec(data_cfg)
  _check_process(process_index, process_count)
  check(_is_int(num_batches) and num_batches > 0, "num_batches", num_batches,
        "must be a positive integer")
  batch_size = _local_batch_size(global_batch_size, process_count)
  names = eval_source_names(spec)
  out = {}
  for name, source in _open_sources(spec, vocab, names, "eval").items():
    stream = _source_stream(spec, source, vocab, train=False, process_index=process_index,
                            process_count=process_count)
    rows = iter(_pack(spec, stream, vocab, batch_size, shuffle_bins=False, salt=0))
    batches = []
    for _ in range(num_batches):
      batch_rows = [row for _, row in zip(range(batch_size), rows)]
      if len(batch_rows) < batch_size:
        filler = empty_batch(batch_size - len(batch_rows), spec.seq_len, vocab.pad_id)
        if not batch_rows:
          batches.append(filler)
          continue
        batch = _stack_rows(batch_rows)
        batches.append({k: np.concatenate([batch[k], filler[k]]) for k in BATCH_KEYS})
      else:
        batches.append(_stack_rows(batch_rows))
    out[name] = batches
  return out


# Global arrays ---------------------------------------------------------------------------------


def make_global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Global [B_local * process_count, L] arrays, batch split over ('data', 'fsdp'), built from
  every host's local rows with `jax.make_array_from_process_local_data` (no host reads another's
  data). The global row count must divide over the mesh's devices on those axes."""
  sharding = batch_sharding(mesh)
  batch_devices = math.prod(mesh.shape[axis] for axis in BATCH)
  out = {}
  for key, value in local_batch.items():
    value = np.asarray(value)
    global_rows = value.shape[0] * jax.process_count()
    if global_rows % batch_devices:
      raise ValueError(f"batch '{key}' has {global_rows} rows over all hosts, which do not divide "
                       f"over the mesh's {batch_devices} devices on axes {BATCH}")
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out
