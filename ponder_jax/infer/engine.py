"""`Engine`: one trained model ready for inference, with fixed pondering steps.

It holds what generation (generate.py) and scoring (score.py) share: the params (placed with the
trainer's logical shardings when a mesh is given), s, the special ids, prompt validation, batch
placement and the compiled functions (reused across calls of the same shapes).

    engine = Engine(model, params, ponder, pad_id=vocab.pad_id, pause_id=vocab.pause_id)
    engine.generate([[bos, 17, 4]], max_new_tokens=32, stop_tokens=[vocab.eos_id])
    engine.score(contexts, continuations)
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ponder_jax import sharding
from ponder_jax.config import ConfigError, PonderConfig
from ponder_jax.data.pause import append_pauses
from ponder_jax.infer import generate as generate_lib
from ponder_jax.infer import score as score_lib
from ponder_jax.model.transformer import Transformer


class Engine:
  """`vocab_size`: ids at or above it (rows that only pad the tables) are never sampled.
  `ponder_steps`: s at inference (default `ponder.steps`; a model trained with `steps_max` may
  take any)."""

  def __init__(self, model: Transformer, params: Any, ponder: PonderConfig, *, pad_id: int,
               pause_id: int | None = None, vocab_size: int | None = None,
               ponder_steps: int | None = None, mesh: Mesh | None = None,
               rules: str = "fsdp"):
    if ponder_steps is None:
      ponder_steps = ponder.steps
    if not (isinstance(ponder_steps, int) and not isinstance(ponder_steps, bool)
            and ponder_steps >= 0):
      raise ConfigError("ponder_steps", ponder_steps, "must be an integer >= 0")
    self.model, self.ponder, self.ponder_steps = model, ponder, ponder_steps
    self.pad_id, self.pause_id = pad_id, pause_id
    self.vocab_size = vocab_size or model.cfg.vocab_size
    self.mesh = mesh
    self.rules = sharding.logical_rules(rules) if mesh is not None else ()
    allowed = np.arange(model.cfg.vocab_size) < self.vocab_size
    if pause_id is not None:
      allowed[pause_id] = False
    self.allowed_V = jnp.asarray(allowed)
    self.params = params if mesh is None else jax.device_put(
        params, sharding.param_shardings(model, mesh, self.rules))
    self._compiled: dict[str, Callable] = {}

  def generate(self, prompts: Sequence[Sequence[int]], **kwargs) -> generate_lib.Generation:
    """See `generate.generate`."""
    return generate_lib.generate(self, prompts, **kwargs)

  def score(self, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
            **kwargs) -> list[score_lib.Score]:
    """See `score.score`."""
    return score_lib.score(self, contexts, continuations, **kwargs)

  # Shared by generate.py and score.py -------------------------------------------------------
  def jitted(self, name: str, fn: Callable, **jit_kwargs) -> Callable:
    if name not in self._compiled:
      self._compiled[name] = jax.jit(fn, **jit_kwargs)
    return self._compiled[name]

  @contextlib.contextmanager
  def context(self):
    """The mesh and logical rules the model's sharding constraints resolve against."""
    if self.mesh is None:
      yield
    else:
      with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
        yield

  def pad_rows(self, rows: list) -> list:
    """Rows repeated at the end until the batch splits over the data-parallel devices."""
    if self.mesh is None:
      return list(rows)
    batch_devices = math.prod(self.mesh.shape[axis] for axis in sharding.BATCH)
    return list(rows) + [rows[0]] * (-len(rows) % batch_devices)

  def place(self, array: np.ndarray) -> jax.Array:
    """A host batch [B, ...] on the device(s), split over the batch axes with a mesh."""
    if self.mesh is None:
      return jnp.asarray(array)
    spec = PartitionSpec(sharding.BATCH, *([None] * (np.ndim(array) - 1)))
    return jax.device_put(array, NamedSharding(self.mesh, spec))

  def prepare_prompts(self, prompts: Sequence[Sequence[int]], num_pauses: int = 0, *,
                      reserve: int | None = 0, key: str = "prompts") -> list[list[int]]:
    """Checked token-id lists with `num_pauses` pauses appended; each leaves `reserve` slots of
    model.max_len free (None: any length)."""
    if isinstance(prompts, (str, bytes)) or not len(prompts):
      raise ConfigError(key, prompts, "must be a non-empty list of token-id lists")
    if not (isinstance(num_pauses, int) and num_pauses >= 0):
      raise ConfigError("num_pauses", num_pauses, "must be an integer >= 0")
    if num_pauses and self.pause_id is None:
      raise ConfigError("num_pauses", num_pauses, "the vocabulary has no <pause> token")
    vocab, max_len = self.model.cfg.vocab_size, self.model.cfg.max_len
    out = []
    for i, prompt in enumerate(prompts):
      ids = [int(t) for t in prompt]
      if not ids:
        raise ConfigError(f"{key}[{i}]", prompt, "is empty: it needs at least one token")
      bad = [t for t in ids if not 0 <= t < vocab]
      if bad:
        raise ConfigError(f"{key}[{i}]", bad[0], f"is not a token id of the model [0, {vocab})")
      if num_pauses:
        ids = append_pauses(ids, num_pauses=num_pauses, pause_id=self.pause_id).tolist()
      if reserve is not None and len(ids) + reserve > max_len:
        raise ConfigError(f"{key}[{i}]", f"{len(ids)} tokens",
                          f"is longer than the model allows (model.max_len = {max_len}"
                          + (f", and {reserve} slot(s) are needed to generate)" if reserve
                             else ")"))
      out.append(ids)
    return out
