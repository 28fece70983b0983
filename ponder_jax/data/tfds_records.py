"""Random access to the datasets tfds_builders.py built: the reading half of the TFDS interop.

`TfdsRecords` gives back the native records of a built dataset, as the source that was built
yields them, for the pipeline's own tokenization (the `tfds` source kind with layout
'procedural' or 'thoughts', sources.py): 'procedural' (dicts of task-local tokens and loss_mask)
and 'thoughts' (lists of (text, thought | None) chunks). `built_datasets` and `check_built` find
what a data directory holds, so that a wrong name fails with the names that are there.

Reading needs `tensorflow_datasets` but neither TensorFlow nor tfds_builders.py, which depends on
the sources this module serves (sources.py imports this module, tfds_builders.py imports both).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ponder_jax.validation import check

LAYOUTS = ("procedural", "thoughts")


def built_datasets(data_dir: str | os.PathLike) -> list[str]:
  """The '<builder>/<config>' (or '<builder>') names of the datasets prepared in `data_dir`.

  Looks three levels deep only (builder, config, version): a shared TFDS directory holds
  thousands of shard files below them.
  """
  def is_version(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "dataset_info.json"))

  def subdirs(path: str) -> list[str]:
    return sorted(entry.name for entry in os.scandir(path) if entry.is_dir())

  found = []
  data_dir = os.fspath(data_dir)
  for builder in subdirs(data_dir):
    for child in subdirs(os.path.join(data_dir, builder)):
      path = os.path.join(data_dir, builder, child)
      if is_version(path):
        found.append(builder)
      elif any(is_version(os.path.join(path, version)) for version in subdirs(path)):
        found.append(f"{builder}/{child}")
  return sorted(set(found))


def check_built(name: str, data_dir: str, key: str) -> None:
  """Raises ConfigError naming `<key>.data_dir` or `<key>.name` unless `data_dir` holds dataset
  `name`: TFDS's own error for a missing dataset lists every dataset in its catalogue."""
  check(bool(data_dir), f"{key}.data_dir", data_dir,
        "name the directory the dataset was built into")
  check(os.path.isdir(data_dir), f"{key}.data_dir", data_dir, "no such directory")
  here = built_datasets(data_dir)
  check(name in here, f"{key}.name", name, f"no such dataset in {data_dir}; built there: {here}")


class TfdsRecords:
  """Random access to the native records of a split of a dataset built here.

  layout 'procedural': {'tokens', 'loss_mask'} int32 arrays of task-local symbols, as a
  procedural source yields them; `num_symbols` is the task's alphabet size (the vocabulary must
  reserve that many procedural symbols).
  layout 'thoughts': a list of (text, thought | None) chunks, as a thoughts or math source (with
  thoughts) yields them; from a ponder_math or ponder_thoughts dataset.
  Errors name `<key>.<option>` (key: the config section, e.g. data.sources.warmup).
  """

  _NEEDS = {"procedural": ("tokens", "loss_mask"), "thoughts": ("chunks",)}

  def __init__(self, name: str, split: str, *, data_dir: str | os.PathLike, layout: str,
               key: str = "tfds", split_key: str = "split"):
    # Lazy: tensorflow_datasets (the optional `interop` extra) loads only when a built dataset
    # is read, so that every other source kind works without it.
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    check(layout in LAYOUTS, f"{key}.layout", layout, f"must be one of {LAYOUTS}")
    data_dir = os.fspath(data_dir)
    check_built(name, data_dir, key)
    builder = tfds.builder(name, data_dir=data_dir)
    splits = sorted(builder.info.splits)
    check(split in splits, f"{key}.{split_key}", split, f"no such split of {name}; splits "
          f"are {splits}")
    features = sorted(builder.info.features)
    missing = [f for f in self._NEEDS[layout] if f not in features]
    check(not missing, f"{key}.layout", layout, f"dataset {name} has features {features}, "
          f"not {missing}")
    self.name, self.split, self.layout = name, split, layout
    metadata = builder.info.metadata or {}
    self.num_symbols = int(metadata.get("num_symbols", 0))
    self._source = builder.as_data_source(split=split)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> Any:
    record = self._source[int(index)]
    if self.layout == "procedural":
      return {"tokens": np.asarray(record["tokens"], np.int32),
              "loss_mask": np.asarray(record["loss_mask"], np.int32)}
    chunks = record["chunks"]
    return [(text.decode("utf-8"), thought.decode("utf-8") or None)
            for text, thought in zip(chunks["text"], chunks["thought"])]

  def __repr__(self) -> str:
    return (f"TfdsRecords({self.name!r}, split={self.split!r}, layout={self.layout!r}, "
            f"n={len(self)})")
