"""Meshes, logical-axis rules, and global batches from per-host data.

Parameters and activations are annotated with *logical* axis names (`embed`, `mlp`, `heads`,
`vocab`, `activation_batch`, ...). One rule table maps them onto the mesh axes
`data`, `fsdp` and `tensor`; changing DP -> FSDP -> FSDP+TP is a config edit
(`mesh.rules = 'dp' | 'fsdp' | 'fsdp_tp'`), never a code edit. A step's batch is split over
('data', 'fsdp'): each host reads only its own rows, and `make_global_batch` assembles the global
arrays from them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ponder_jax.batch import Batch
from ponder_jax.validation import ConfigError, check, from_mapping

MESH_AXES = ("data", "fsdp", "tensor")
BATCH = ("data", "fsdp")  # the global batch is split over every data-parallel axis

_ACTIVATIONS = (
    ("activation_batch", BATCH),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_kv", None),
)
RULES: dict[str, tuple] = {
    "dp": _ACTIVATIONS + (
        ("activation_heads", None), ("activation_mlp", None), ("activation_vocab", None),
    ),
    "fsdp": _ACTIVATIONS + (
        ("activation_heads", None), ("activation_mlp", None), ("activation_vocab", None),
        ("embed", "fsdp"),
    ),
    "fsdp_tp": _ACTIVATIONS + (
        ("activation_heads", "tensor"), ("activation_mlp", "tensor"),
        ("activation_vocab", "tensor"),
        ("heads", "tensor"), ("kv_heads", "tensor"), ("mlp", "tensor"), ("vocab", "tensor"),
        ("embed", "fsdp"),
    ),
}


def logical_rules(name: str) -> tuple:
  if name not in RULES:
    raise ConfigError("mesh.rules", name, f"must be one of {sorted(RULES)}")
  return RULES[name]


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """A validated `mesh` section (`MeshConfig.from_config`): axis sizes within a slice (`ici`)
  and across slices (`dcn`), -1 filling with the remaining devices, and the `RULES` preset."""
  ici: Mapping[str, int] = dataclasses.field(
      default_factory=lambda: {"data": -1, "fsdp": 1, "tensor": 1})
  dcn: Mapping[str, int] = dataclasses.field(
      default_factory=lambda: {"data": 1, "fsdp": 1, "tensor": 1})
  rules: str = "fsdp"  # dp | fsdp | fsdp_tp

  @classmethod
  def from_config(cls, section: Mapping[str, Any]) -> "MeshConfig":
    cfg = from_mapping(cls, section, "mesh")
    sizes = {}
    for part in ("ici", "dcn"):
      sizes[part] = dict(getattr(cfg, part).items())
      for axis, size in sizes[part].items():
        check(axis in MESH_AXES, f"mesh.{part}.{axis}", size,
              f"unknown mesh axis; use {MESH_AXES}")
        check(isinstance(size, int) and (size >= 1 or size == -1), f"mesh.{part}.{axis}", size,
              "must be a positive integer or -1")
    logical_rules(cfg.rules)
    return cls(ici=sizes["ici"], dcn=sizes["dcn"], rules=cfg.rules)

  @property
  def logical_rules(self) -> tuple:
    return RULES[self.rules]

  def make_mesh(self, devices: Sequence[jax.Device] | None = None) -> Mesh:
    return make_mesh(self.ici, self.dcn, devices=devices)


def _resolve_fill(sizes: Mapping[str, int], total: int, key: str) -> list[int]:
  """Replaces one -1 by whatever makes the product equal `total`."""
  shape = [int(sizes.get(axis, 1)) for axis in MESH_AXES]
  if shape.count(-1) > 1:
    raise ConfigError(key, dict(sizes), "at most one axis may be -1 (fill)")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if known <= 0 or total % known:
      raise ConfigError(key, dict(sizes), f"cannot fill to {total} devices")
    shape[shape.index(-1)] = total // known
  if math.prod(shape) != total or min(shape) < 1:
    raise ConfigError(key, dict(sizes),
                      f"mesh {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, "
                      f"but {total} are available")
  return shape


def make_mesh(ici: Mapping[str, int] | None = None, dcn: Mapping[str, int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh; -1 fills. `dcn` sizes span slices (multi-slice TPU)."""
  devices = list(devices if devices is not None else jax.devices())
  ici = dict(ici or {"data": -1})
  if dcn and math.prod(int(v) for v in dcn.values() if v != -1) > 1:
    num_slices = len({getattr(d, "slice_index", 0) for d in devices})
    dcn_shape = _resolve_fill(dcn, num_slices, "mesh.dcn")
    ici_shape = _resolve_fill(ici, len(devices) // num_slices, "mesh.ici")
    grid = mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices)
  else:
    shape = _resolve_fill(ici, len(devices), "mesh.ici")
    try:
      grid = mesh_utils.create_device_mesh(shape, devices)
    except (AssertionError, ValueError, NotImplementedError):
      grid = np.asarray(devices).reshape(shape)  # e.g. simulated CPU devices
  return Mesh(grid, MESH_AXES)


def logical_sharding(abstract_tree, mesh: Mesh, rules) -> object:
  """NamedShardings for a (boxed) tree of LogicallyPartitioned values."""
  return nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract_tree), mesh, rules)


def param_shardings(model: nn.Module, mesh: Mesh, rules) -> object:
  """NamedShardings of a Transformer's params (traced abstractly, nothing is initialised)."""
  boxed = jax.eval_shape(model.init, jax.random.key(0), jax.numpy.zeros((1, 1), "int32"))
  return logical_sharding(boxed, mesh, rules)["params"]


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """[B, L] arrays: batch split over ('data', 'fsdp'), length replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH, None))


def make_global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> Batch:
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
