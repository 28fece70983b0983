"""Reading Hugging Face weight files one tensor (or one row range) at a time.

A `TensorSource` answers names, shapes and reads of fp32 numpy arrays, and says which file a
tensor lives in so errors can name it. Three kinds:
  safetensors   `model.safetensors` or shards listed in `model.safetensors.index.json`, memory
                mapped through `safe_open`; bf16 tensors (which numpy cannot name) are read from
                the file's header offsets as `ml_dtypes.bfloat16`.
  pickle        `pytorch_model.bin` (or its shard index), only with `torch.load(weights_only=True)`:
                a file that needs any code beyond plain tensors to unpickle is refused.
  state dict    an in-memory `transformers` model's `state_dict()`.
safetensors is preferred when a directory holds both. Nothing here knows about model families.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from typing import Iterable, Mapping, Protocol

import ml_dtypes
import numpy as np

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFETENSORS, SAFETENSORS_INDEX, PICKLE, PICKLE_INDEX)  # in order of preference

Rows = slice | None  # a range of the leading axis, or the whole tensor


class CheckpointError(ValueError):
  """A weight file is unreadable, unsafe, or holds a tensor that does not fit the config."""


class TensorSource(Protocol):
  def names(self) -> list[str]: ...
  def shape(self, name: str) -> tuple[int, ...]: ...
  def read(self, name: str, rows: Rows = None) -> np.ndarray: ...
  def location(self, name: str) -> str: ...
  def close(self) -> None: ...


def _as_f32(array) -> np.ndarray:
  return np.asarray(array, dtype=np.float32)


class SafetensorsSource:
  """One or more safetensors files, memory mapped; each read touches only what it returns."""

  def __init__(self, files_by_name: Mapping[str, str]):
    from safetensors import safe_open  # pylint: disable=import-outside-toplevel
    self._file_of = dict(files_by_name)
    self._handles = {}
    self._headers = {}
    for path in sorted(set(self._file_of.values())):
      try:
        self._handles[path] = safe_open(path, framework="numpy")
      except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    self._shape = {}
    for name, path in self._file_of.items():
      try:
        self._shape[name] = tuple(self._handles[path].get_slice(name).get_shape())
      except Exception as e:
        raise CheckpointError(f"{path}: tensor '{name}' listed in the index is missing from the "
                              f"file ({e})") from e

  def names(self) -> list[str]:
    return list(self._file_of)

  def shape(self, name: str) -> tuple[int, ...]:
    return self._shape[name]

  def location(self, name: str) -> str:
    return self._file_of[name]

  def read(self, name: str, rows: Rows = None) -> np.ndarray:
    path = self._file_of[name]
    tensor = self._handles[path].get_slice(name)
    if tensor.get_dtype() == "BF16":
      return self._read_bf16(path, name, rows)
    return _as_f32(tensor[rows] if rows is not None else tensor[:])

  def _read_bf16(self, path: str, name: str, rows: Rows) -> np.ndarray:
    """bf16 from the raw file: the header (u64 length + JSON) gives each tensor's byte range."""
    if path not in self._headers:
      with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        self._headers[path] = (8 + length, json.loads(f.read(length)))
    data_start, header = self._headers[path]
    begin, _ = header[name]["data_offsets"]
    shape = self._shape[name]
    start, stop = (0, shape[0]) if rows is None else rows.indices(shape[0])[:2]
    row_items = int(np.prod(shape[1:], dtype=np.int64))
    with open(path, "rb") as f:
      f.seek(data_start + begin + 2 * start * row_items)
      raw = np.fromfile(f, dtype=np.uint16, count=(stop - start) * row_items)
    return raw.view(ml_dtypes.bfloat16).astype(np.float32).reshape((stop - start,) + shape[1:])

  def close(self) -> None:
    self._handles.clear()


class StateDictSource:
  """torch tensors by name: an in-memory model's state dict, or the contents of .bin files."""

  def __init__(self, tensors: Mapping[str, object], locations: Mapping[str, str] | str):
    self._tensors = dict(tensors)
    self._where = (dict(locations) if not isinstance(locations, str)
                   else {name: locations for name in self._tensors})

  def names(self) -> list[str]:
    return list(self._tensors)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._tensors[name].shape)

  def location(self, name: str) -> str:
    return self._where[name]

  def read(self, name: str, rows: Rows = None) -> np.ndarray:
    tensor = self._tensors[name]
    if rows is not None:
      tensor = tensor[rows]
    return tensor.detach().float().cpu().numpy()

  def close(self) -> None:
    self._tensors.clear()


def load_pickle_safely(path: str) -> dict:
  """A `pytorch_model.bin` state dict via `torch.load(weights_only=True)`; refuses code."""
  import torch  # pylint: disable=import-outside-toplevel
  import pickle  # pylint: disable=import-outside-toplevel
  try:
    # mmap keeps tensors on disk until read; only the zip format (torch >= 1.6) supports it.
    state = torch.load(path, map_location="cpu", weights_only=True,
                       mmap=zipfile.is_zipfile(path))
  except pickle.UnpicklingError as e:
    raise CheckpointError(
        f"{path}: refused to unpickle: the file needs code beyond plain tensors to load, which "
        f"could execute anything. Convert it to safetensors with a trusted tool. ({e})") from e
  except Exception as e:
    raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from e
  if not isinstance(state, dict):
    raise CheckpointError(f"{path}: expected a dict of tensors, found {type(state).__name__}")
  return state


def _read_index(index_path: str) -> dict[str, str]:
  """A shard index's weight_map as tensor name -> absolute shard path."""
  try:
    with open(index_path, encoding="utf-8") as f:
      weight_map = json.load(f)["weight_map"]
  except (OSError, ValueError, KeyError) as e:
    raise CheckpointError(f"{index_path}: not a shard index with a 'weight_map' ({e})") from e
  directory = os.path.dirname(index_path)
  files = {name: os.path.join(directory, shard) for name, shard in weight_map.items()}
  for shard in sorted(set(files.values())):
    if not os.path.isfile(shard):
      raise FileNotFoundError(f"{index_path} lists shard {shard}, which does not exist")
  return files


def _names_in(path: str) -> Iterable[str]:
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  try:
    with safe_open(path, framework="numpy") as f:
      return list(f.keys())
  except Exception as e:
    raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def open_directory(directory: str) -> TensorSource:
  """The weights of a Hugging Face model directory, preferring safetensors over pickles."""
  present = [f for f in WEIGHT_FILES if os.path.isfile(os.path.join(directory, f))]
  if not present:
    raise FileNotFoundError(f"{directory}: no weights found; expected one of {list(WEIGHT_FILES)}")
  chosen = os.path.join(directory, present[0])
  if present[0] == SAFETENSORS:
    return SafetensorsSource({name: chosen for name in _names_in(chosen)})
  if present[0] == SAFETENSORS_INDEX:
    return SafetensorsSource(_read_index(chosen))
  if present[0] == PICKLE:
    return StateDictSource(load_pickle_safely(chosen), chosen)
  files = _read_index(chosen)
  tensors, where = {}, {}
  for shard in sorted(set(files.values())):
    for name, tensor in load_pickle_safely(shard).items():
      tensors[name], where[name] = tensor, shard
  return StateDictSource(tensors, where)
