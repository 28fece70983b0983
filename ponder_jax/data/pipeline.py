"""The grain input pipeline the trainer consumes: the train iterator, phase by phase, and the
held-out eval batches (DESIGN.md "How data flows"; MaxText's grain pipeline is the model).

    sources (sources.py) -> host streams (streams.py: examples, thought layout, pauses,
    per-host slice, pieces) -> mixture on the phase schedule (spec.py) -> packing -> Batch

Within a phase, `IterDataset.mix` draws *documents* in exact proportion to the phase's weights,
then grain's first-fit packer fills rows of seq_len tokens, and rows are stacked into host-local
batches (`Batch`, batch.py). A source used by several phases continues where the previous phase's
last emitted document left it (the semantic stream is one fixed sequence; phases change only the
mix). The train iterator is a grain DatasetIterator: `get_state`/`set_state` (and orbax through
`grain.checkpoint.CheckpointHandler`) capture the step, the phase and every grain position, so a
restored iterator yields the identical stream, across phase switches too. Global arrays are built
from these host batches by `sharding.make_global_batch`.

The functions take the run's validated `DataSpec` (or a raw `data` section, validated on the
spot). The config half (defaults, `phase_config`, validation, the budget) lives in spec.py and is
importable from here too, as configs/ import `pipeline.phase_config`.

Not here: tokenizers (vocab.py), generators (procedural.py, math_corpus.py), the thought and pause
transforms themselves (thoughts.py, pause.py), and the training loop.
"""

from __future__ import annotations

import atexit
import weakref
from typing import Any, Mapping, Sequence

import grain

from ponder_jax.batch import Batch, empty_batch, pad_rows
from ponder_jax.data import streams
from ponder_jax.data.spec import (  # noqa: F401  (the config half, re-exported: see above)
    DataConfig, DataSpec, PhaseSpec, as_spec, default_data_config, eval_source_names,
    phase_config, source_names, total_train_steps, validate_data_config)
from ponder_jax.data.streams import source_stream  # noqa: F401  (re-exported)
from ponder_jax.data.vocab import Vocabulary
from ponder_jax.validation import check, is_int

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
    per_source = {}
    for name in sorted(phase.weights):
      start = self._phase_start.setdefault(name, self._next_item.get(name, 0))
      per_source[name] = streams.host_stream(
          self._spec, self._sources[name], self._vocab, train=True,
          process_index=self._process_index, process_count=self._process_count, start=start)
    if len(per_source) == 1:
      mixed = next(iter(per_source.values()))
    else:
      mixed = grain.IterDataset.mix(per_source, {n: phase.weights[n] for n in per_source})
    bins = self._spec.packing["bins"] or self._batch_size
    packed = streams.pack(self._spec, mixed, self._vocab, bins,
                          shuffle_bins=self._spec.packing["shuffle_bins"],
                          seed_salt=streams.salt(phase.name))
    if self._spec.prefetch_batches:
      packed = grain.experimental.ThreadPrefetchIterDataset(
          packed, prefetch_buffer_size=self._spec.prefetch_batches * self._batch_size)
    return iter(packed)

  def _advance_phase(self) -> None:
    self.close()
    self._phase += 1
    self._phase_start = {}
    self._inner = self._open_phase()

  def __next__(self) -> Batch:
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
    return streams.stack_rows(rows)

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


# Iterators -------------------------------------------------------------------------------------


def make_train_iterator(data: DataConfig, vocab: Vocabulary, *, global_batch_size: int,
                        process_index: int = 0, process_count: int = 1) -> TrainIterator:
  """The host-local train iterator: each `next()` is one step's Batch (batch.py) of
  global_batch_size / process_count rows."""
  spec = as_spec(data)
  streams.check_process(process_index, process_count)
  batch_size = streams.local_batch_size(global_batch_size, process_count)
  used = sorted({name for phase in spec.phases for name in phase.weights})
  return TrainIterator(spec, vocab, streams.open_sources(spec, vocab, used, "train"),
                       batch_size=batch_size, process_index=process_index,
                       process_count=process_count)


def make_eval_iterators(data: DataConfig, vocab: Vocabulary, *, global_batch_size: int,
                        process_index: int = 0, process_count: int = 1,
                        num_batches: int) -> dict[str, list[Batch]]:
  """Per source with a held-out split: `num_batches` host-local batches of its first documents,
  deterministic (no shuffle; pauses only with data.pause.in_eval) and the same on every run.

  Every host returns exactly `num_batches` batches, so evaluation steps stay in lockstep; when a
  held-out split runs out, the remaining batches are all padding (they carry no weight).
  """
  spec = as_spec(data)
  streams.check_process(process_index, process_count)
  check(is_int(num_batches) and num_batches > 0, "num_batches", num_batches,
        "must be a positive integer")
  batch_size = streams.local_batch_size(global_batch_size, process_count)
  names = eval_source_names(spec)
  out = {}
  for name, source in streams.open_sources(spec, vocab, names, "eval").items():
    stream = streams.host_stream(spec, source, vocab, train=False, process_index=process_index,
                                 process_count=process_count)
    rows = iter(streams.pack(spec, stream, vocab, batch_size, shuffle_bins=False, seed_salt=0))
    batches = []
    for _ in range(num_batches):
      batch_rows = [row for _, row in zip(range(batch_size), rows)]
      if len(batch_rows) < batch_size:
        if not batch_rows:
          batches.append(empty_batch(batch_size, spec.seq_len, vocab.pad_id))
          continue
        batches.append(pad_rows(streams.stack_rows(batch_rows), batch_size, vocab.pad_id))
      else:
        batches.append(streams.stack_rows(batch_rows))
    out[name] = batches
  return out

