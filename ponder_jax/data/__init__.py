"""Data: vocabularies, procedural generators, text and thought formatting, pause transforms and
the grain pipeline that mixes, packs and shards them for the trainer.

`data_dir()` is where the shipped data lives (the Shakespeare sample, the tokenizer model): the
repository's top-level data/ folder, or the folder named by $PONDER_JAX_DATA_DIR (needed when the
package is installed without its repository, where data/ does not travel with it).
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "PONDER_JAX_DATA_DIR"
DATA_DIR = Path(__file__).resolve().parents[2] / "data"


def data_dir() -> Path:
  """$PONDER_JAX_DATA_DIR if set, else the repository's data/ folder."""
  override = os.environ.get(DATA_DIR_ENV)
  return Path(override) if override else DATA_DIR
