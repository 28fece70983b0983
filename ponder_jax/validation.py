"""How configs are validated: the error every bad value raises, and two helpers to raise it.

Configs are validated once at start, and a bad value fails with a message that names its key
and value (`config key 'data.seq_len' = 1: must be an integer >= 2`). Every module that reads
a config section (model, ponder, data, math corpus, BoLT, ...) checks it with these, so the
message reads the same wherever the key lives. Nothing here knows any config section.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np


class ConfigError(ValueError):
  """A config value is invalid. The message names the key and the value."""

  def __init__(self, key: str, value: Any, why: str):
    self.key, self.value = key, value
    super().__init__(f"config key '{key}' = {value!r}: {why}")


def check(ok: bool, key: str, value: Any, why: str) -> None:
  """Raises ConfigError(key, value, why) unless `ok`."""
  if not ok:
    raise ConfigError(key, value, why)


def is_int(value: Any) -> bool:
  """An integer (numpy's too), and not a bool."""
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_int(value: Any, key: str, minimum: int) -> None:
  """Raises ConfigError(key, value) unless `value` is an integer >= `minimum`."""
  check(is_int(value) and value >= minimum, key, value, f"must be an integer >= {minimum}")


def from_mapping(cls: type, section: Mapping[str, Any] | None, prefix: str) -> Any:
  """Dataclass `cls` built from a (Config)dict section; a key that `cls` has no field for is a
  ConfigError naming `<prefix>.<key>` (a typo fails instead of being ignored)."""
  section = dict(section or {})
  names = {f.name for f in dataclasses.fields(cls)}
  for key in section:
    check(key in names, f"{prefix}.{key}", section[key],
          f"unknown key; known keys are {sorted(names)}")
  return cls(**section)
