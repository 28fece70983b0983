"""Orbax checkpoints of the train state, the grain iterator and the resolved config.

Layout: `<workdir>/checkpoints/<step>/{state,data,config}`. Saves are asynchronous and atomic
(orbax writes to a temporary directory and renames it when complete), so a crash mid-save never
leaves a checkpoint that looks finished. On resume the newest checkpoint is tried first; one that
cannot be read (truncated, corrupted) is reported by path and the previous one is used.
`load_params` reads the params of any trainer checkpoint on the host, for partial init.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from typing import Any, Mapping

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging

from ponder_jax.validation import check, check_int, from_mapping


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """A validated `checkpoint` section (`CheckpointConfig.from_config`)."""
  every: int = 200  # steps between saves (0: only at the end and on preemption)
  keep: int = 3  # the last N ...
  keep_period: int = 0  # ... plus every K-th step (0: none)
  async_save: bool = True

  @classmethod
  def from_config(cls, section: Mapping[str, Any]) -> "CheckpointConfig":
    cfg = from_mapping(cls, section, "checkpoint")
    check_int(cfg.every, "checkpoint.every", 0)
    check_int(cfg.keep, "checkpoint.keep", 1)
    check_int(cfg.keep_period, "checkpoint.keep_period", 0)
    check(isinstance(cfg.async_save, bool), "checkpoint.async_save", cfg.async_save,
          "must be true or false")
    return cfg


class Checkpointer:
  """Save / restore of {'state', 'data', 'config'} under <workdir>/checkpoints."""

  @classmethod
  def from_config(cls, workdir: str, cfg: CheckpointConfig) -> "Checkpointer":
    return cls(workdir, keep=cfg.keep, keep_period=cfg.keep_period, async_save=cfg.async_save)

  def __init__(self, workdir: str, *, keep: int, keep_period: int = 0,
               async_save: bool = True):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        keep_period=keep_period or None,
        enable_async_checkpointing=async_save,
        create=True,
    )
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={
            "state": ocp.StandardCheckpointHandler(),
            "data": grain.checkpoint.CheckpointHandler(),
            "config": ocp.JsonCheckpointHandler(),
        })

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iterator, config_json: str) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iterator),
        config=ocp.args.JsonSave(json.loads(config_json)),
    ), force=True)

  def restore_latest(self, abstract_state: Any, data_iterator) -> tuple[int, Any] | None:
    """(step, state) of the newest readable checkpoint, also restoring the iterator in place.

    A checkpoint written by a different number of processes restores the state and continues
    the data stream with `set_state_from_hosts` (see data/pipeline.py). Raises when checkpoints
    exist but none can be read, rather than silently starting over next to them.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    for step in steps:
      path = os.path.join(self.directory, str(step))
      try:
        host_states = _foreign_data_states(os.path.join(path, "data"))
        if host_states is None:
          restored = self.manager.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state),
              data=grain.checkpoint.CheckpointRestore(data_iterator)))
        else:
          restored = self.manager.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state)))
          data_iterator.set_state_from_hosts(host_states)
          logging.warning("Checkpoint %s was written by %d processes, this run has %d: the data "
                          "stream continues from the hosts' joint position.", path,
                          len(host_states), jax.process_count())
      except Exception as e:  # pylint: disable=broad-except
        logging.error("Checkpoint %s cannot be restored (%s: %s); trying the previous one.",
                      path, type(e).__name__, e)
        continue
      return step, restored["state"]
    if steps:
      raise RuntimeError(f"none of the checkpoints {steps} under {self.directory} can be "
                         "restored (see the errors above); move them away to start afresh")
    return None

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _foreign_data_states(data_dir: str) -> list[dict] | None:
  """The per-process iterator states of a checkpoint written by another process count."""
  files = glob.glob(os.path.join(data_dir, "process_*-of-*.json"))
  counts = {int(re.search(r"-of-(\d+)\.json$", f).group(1)) for f in files}
  if not files or counts == {jax.process_count()}:
    return None
  (count,) = counts
  states = []
  for index in range(count):
    with open(os.path.join(data_dir, f"process_{index}-of-{count}.json"), encoding="utf-8") as f:
      states.append(json.load(f))
  return states


def resolve_checkpoint_dir(path: str) -> str:
  """A trainer workdir, its checkpoints/ dir or one step dir -> the newest step dir."""
  path = os.path.abspath(path)
  for candidate in (path, os.path.join(path, "checkpoints")):
    steps = [int(d) for d in os.listdir(candidate) if d.isdigit()] if os.path.isdir(
        candidate) else []
    if steps:
      return os.path.join(candidate, str(max(steps)))
  if os.path.isdir(os.path.join(path, "state")):
    return path
  raise FileNotFoundError(f"no trainer checkpoint under {path} (expected <workdir>/checkpoints/"
                          "<step>/state or a step directory)")


def load_params(path: str) -> dict:
  """The params of a trainer checkpoint as host numpy arrays."""
  step_dir = resolve_checkpoint_dir(path)
  state = ocp.StandardCheckpointer().restore(os.path.join(step_dir, "state"))
  return state["params"]
