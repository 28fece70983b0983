"""One `Vocabulary` interface for every tokenizer the project uses.

Special tokens every implementation provides (METHODS.md §2.1, §4.1):
  pad, bos, eos       padding (segment id 0 in packed rows), document start and end
  pause               `<pause>` (pause tokens)
  sol, eol            `<|START_OF_LATENT|>`, `<|END_OF_LATENT|>` (BoLT latent thoughts)
  prior, posterior    `<|PRIOR_PREFIX|>`, `<|POSTERIOR_PREFIX|>`
and a block of procedural symbols: `procedural_id(i)` maps a task-local symbol i (Dyck brackets,
sequence-task tokens, separators) to a global id.
"""

from __future__ import annotations

import abc
from typing import Sequence

import numpy as np


class Vocabulary(abc.ABC):
  """Text <-> ids, plus the reserved special and procedural ids."""

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of ids; the model's embedding table needs at least this many rows."""

  # Special ids.
  @property
  @abc.abstractmethod
  def pad_id(self) -> int: ...

  @property
  @abc.abstractmethod
  def bos_id(self) -> int: ...

  @property
  @abc.abstractmethod
  def eos_id(self) -> int: ...

  @property
  @abc.abstractmethod
  def pause_id(self) -> int: ...

  @property
  @abc.abstractmethod
  def sol_id(self) -> int: ...

  @property
  @abc.abstractmethod
  def eol_id(self) -> int: ...

  @property
  @abc.abstractmethod
  def prior_id(self) -> int: ...

  @property
  @abc.abstractmethod
  def posterior_id(self) -> int: ...

  @property
  @abc.abstractmethod
  def num_procedural(self) -> int:
    """How many procedural symbols `procedural_id` accepts."""

  @abc.abstractmethod
  def procedural_id(self, symbol: int | np.ndarray) -> int | np.ndarray:
    """Global id(s) of task-local procedural symbol(s) 0 .. num_procedural - 1."""

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Ids of `text`, without bos/eos."""

  @abc.abstractmethod
  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`; special tokens are rendered by name."""

  @property
  def special_ids(self) -> dict[str, int]:
    return {name: getattr(self, f"{name}_id") for name in
            ("pad", "bos", "eos", "pause", "sol", "eol", "prior", "posterior")}
