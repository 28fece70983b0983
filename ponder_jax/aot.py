"""Ahead-of-time check: compile the exact train step (and optionally one decode step) of a config
for a target before any chip is rented, and print what each chip would hold and do.

    ponder-aot --config=configs/pretrain.py:pythia-1b --topology=v5e:4x4 [--slices=2] [--decode]
    ponder-aot --config=configs/pretrain.py:pythia-410m --devices=8 --config.mesh.ici.fsdp=8

`--topology` compiles with XLA's TPU compiler on this (CPU) host: libtpu, installed by the `tpu`
extra, describes the chips of a slice (`jax.experimental.topologies`) and the step is lowered and
compiled for them, so the memory figures are the TPU executable's own. Per chip it reports
arguments, outputs, temporaries and their total against the chip's HBM
(`accounting.HBM_BYTES`), XLA's cost analysis (FLOPs, HBM bytes, its `optimal_seconds`), an
estimated step time with the tokens/s and MFU it implies, and every parameter's sharding. A
mesh that does not match the topology, and a step that does not fit, are refused (exit codes 2
and 1). `--devices=N` compiles for N simulated CPU devices instead (no libtpu needed; memory then
comes from XLA:CPU, whose layouts and fusion differ: leave headroom; `--hbm_gb` checks it).

Both build the Trainer exactly as `ponder-train` does (same config, mesh, logical rules,
optimizer) and compile its own step (`Trainer.compile_train_step`) over its abstract state
(ShapeDtypeStructs carrying their shardings) and a ShapeDtypeStruct batch. No data, no params.

The step-time estimate is XLA's cost model, not a measurement. XLA's TPU cost analysis counts
the body of a while loop once (the scanned layers, the pondering passes, the microbatches and
the windowed einsums of FSDP's collective matmuls are loops) and returns a negative
`optimal_seconds` when some ops have no cost (seen for the vocabulary-sized ops of 50k-row
tables), so the estimate is a roofline over the compiled program: the FLOPs the step executes
(`accounting.executed_training_flops_per_token`: model FLOPs plus rematerialisation; within ~1%
of XLA's count on loop-free programs) at the chip's peak bf16 rate, or the program's HBM
traffic at the chip's HBM bandwidth, whichever takes longer. The traffic (`hlo_traffic`) is
read from the optimized program: the bytes of every op's operands and results outside fusions,
as XLA counts them (within ~5% of XLA's count on a loop-free 160M step), skipping arrays the
compiler put in on-chip memories (VMEM, v4's CMEM), each loop body times its trip count.
Collectives are assumed to overlap with compute; their bytes are reported. A per-op sum would
be slower than this bound.

It must own its process: the simulated device count is fixed when JAX's backend starts.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import re
import sys
from typing import Any

from absl import app, flags
from ml_collections import config_flags

_GIB = 1024 ** 3


class TopologyError(ValueError):
  """An unknown or malformed TPU topology name (the message lists the accepted forms)."""


# Topologies -----------------------------------------------------------------------------------
ACCEPTED_FORMS = (
    "v4:AxBxC, v5p:AxBxC, v5e:AxB or v6e:AxB (chips per dimension of one slice, e.g. v5e:4x4, "
    "v5e:16x16, v4:2x2x4, v5p:2x4x4), or a Cloud TPU accelerator type: v4-N or v5p-N (N "
    "TensorCores, 2 per chip: v4-32 is 16 chips), v5litepod-N (also v5e-N) or v6e-N (N chips); "
    "--slices=K for K such slices over the data-centre network")
_GENERATIONS = {"v4": "v4", "v5p": "v5p", "v5e": "v5e", "v5litepod": "v5e", "v6e": "v6e"}
_DIMS = {"v4": 3, "v5p": 3, "v5e": 2, "v6e": 2}
_CORES_PER_CHIP = {"v4": 2, "v5p": 2, "v5e": 1, "v6e": 1}  # as counted by accelerator types
# Slice shapes of the accelerator types (MaxText's accelerator_to_spec_map.py, Cloud TPU docs).
_SHAPES = {
    2: {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16),
        256: (16, 16)},
    3: {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4),
        128: (4, 4, 8), 256: (4, 8, 8), 512: (8, 8, 8), 1024: (8, 8, 16), 2048: (8, 16, 16),
        4096: (16, 16, 16)},
}


@dataclasses.dataclass(frozen=True)
class Topology:
  """One or more identical TPU slices: the generation and the chips along each axis."""
  generation: str  # v4 | v5e | v5p | v6e
  shape: tuple[int, ...]
  slices: int = 1

  @property
  def chips_per_slice(self) -> int:
    return math.prod(self.shape)

  @property
  def chips(self) -> int:
    return self.chips_per_slice * self.slices

  @property
  def name(self) -> str:
    """libtpu's name of one slice, e.g. 'v5e:4x4'."""
    return f"{self.generation}:{'x'.join(map(str, self.shape))}"

  @property
  def accelerator_type(self) -> str:
    """The Cloud TPU name of one slice, e.g. 'v5litepod-16', 'v4-32'."""
    prefix = "v5litepod" if self.generation == "v5e" else self.generation
    return f"{prefix}-{self.chips_per_slice * _CORES_PER_CHIP[self.generation]}"

  def describe(self) -> str:
    slices = f" x {self.slices} slices" if self.slices > 1 else ""
    return f"{self.name} ({self.accelerator_type}{slices}, {self.chips} chips)"

  def topology_kwargs(self) -> dict[str, Any]:
    """`get_topology_desc` options as MaxText passes them: megacore chips on v4 / v5p (one JAX
    device per chip, as on a real slice), 2x2 chips per host, wrap-around links on full pods."""
    three_d = len(self.shape) == 3
    if three_d:
      wrap = (min(self.shape) >= 4,) * 3
    else:
      wrap = tuple(n == 16 for n in self.shape) + (False,)
    host = (2, 2, 1) if self.chips_per_slice >= 4 else tuple(self.shape) + (1,) * (3 - len(
        self.shape))
    return dict(chip_config_name="megacore" if three_d else "default",
                chips_per_host_bounds=host, num_slices=self.slices, wrap=wrap)


def parse_topology(name: str, slices: int = 1) -> Topology:
  """'v5e:4x4', 'v4:2x2x4', 'v5litepod-16', 'v4-32', ... -> Topology; TopologyError otherwise."""
  if not isinstance(slices, int) or slices < 1:
    raise TopologyError(f"--slices={slices!r} must be an integer >= 1")
  text = str(name).strip().lower()
  match = re.fullmatch(r"(v4|v5p|v5e|v5litepod|v6e)([:-])([0-9x]+)", text)
  if not match:
    raise TopologyError(f"unknown TPU topology {name!r}; accepted forms: {ACCEPTED_FORMS}")
  generation, sep, size = _GENERATIONS[match.group(1)], match.group(2), match.group(3)
  dims = _DIMS[generation]
  if sep == ":":
    parts = size.split("x")
    if len(parts) != dims or not all(p.isdigit() and int(p) >= 1 for p in parts):
      raise TopologyError(f"TPU topology {name!r}: {generation} slices have {dims} dimensions "
                          f"of chips; accepted forms: {ACCEPTED_FORMS}")
    return Topology(generation, tuple(int(p) for p in parts), slices)
  if not size.isdigit() or int(size) % _CORES_PER_CHIP[generation]:
    raise TopologyError(f"unknown TPU topology {name!r}; accepted forms: {ACCEPTED_FORMS}")
  chips = int(size) // _CORES_PER_CHIP[generation]
  if chips not in _SHAPES[dims]:
    known = ", ".join(f"{match.group(1)}-{n * _CORES_PER_CHIP[generation]}"
                      for n in _SHAPES[dims])
    raise TopologyError(f"unknown TPU topology {name!r}: no {generation} slice of {chips} chips "
                        f"is known here (known: {known}); give the shape instead, e.g. "
                        f"{generation}:{'x'.join(['2'] * dims)}; accepted forms: {ACCEPTED_FORMS}")
  return Topology(generation, _SHAPES[dims][chips], slices)


def _quiet_libtpu(topology: Topology) -> None:
  """Environment for libtpu as a compiler only, set before it loads. On a host without TPUs it
  otherwise prints warnings about unset TPU_ACCELERATOR_TYPE / TPU_WORKER_HOSTNAMES and queries
  the metadata server; the default backend stays the CPU (nothing runs on a TPU), and libtpu's
  single-process lock is waived (no chip is opened), so that a compile can run beside another
  process that loaded libtpu."""
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", topology.accelerator_type)
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")


def tpu_devices(topology: Topology) -> list:
  """The compile-only JAX devices of `topology` (one per chip), described by libtpu."""
  if importlib.util.find_spec("libtpu") is None:
    raise RuntimeError("compiling for a TPU topology needs libtpu: pip install -c constraints.txt "
                       "-e '.[tpu]'")
  _quiet_libtpu(topology)
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  try:
    desc = topologies.get_topology_desc(topology_name=topology.name, platform="tpu",
                                        **topology.topology_kwargs())
  except Exception as e:  # pylint: disable=broad-except  # libtpu's own message
    raise TopologyError(f"libtpu does not know the topology {topology.describe()}: {e}; "
                        f"accepted forms: {ACCEPTED_FORMS}") from e
  return list(desc.devices)


def _use_simulated_devices(count: int) -> None:
  """Asks for `count` CPU devices; must run before JAX's backend initialises."""
  flags_ = os.environ.get("XLA_FLAGS", "")
  flags_ = " ".join(f for f in flags_.split()
                    if not f.startswith("--xla_force_host_platform_device_count"))
  os.environ["XLA_FLAGS"] = f"{flags_} --xla_force_host_platform_device_count={count}".strip()
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_platforms", "cpu")
  if jax.device_count() != count:
    raise RuntimeError(f"JAX already started with {jax.device_count()} devices; run the AOT "
                       "check in its own process (python -m ponder_jax.aot ...)")


# Building and compiling -----------------------------------------------------------------------
def _bytes(n: float) -> str:
  for unit, size in (("GiB", _GIB), ("MiB", 1024 ** 2), ("KiB", 1024)):
    if n >= size:
      return f"{n / size:9.2f} {unit}"
  return f"{n:9.0f} B"


def _path(key_path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in key_path)


def sharding_table(abstract_params) -> list[tuple[str, tuple, str, str, tuple, int]]:
  """(path, global shape, dtype, partition spec, per-device shard shape, shard bytes) rows."""
  import jax  # pylint: disable=import-outside-toplevel
  rows = []
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
    shard = leaf.sharding.shard_shape(leaf.shape)
    rows.append((_path(key_path), tuple(leaf.shape), str(leaf.dtype), str(leaf.sharding.spec),
                 tuple(shard), math.prod(shard) * leaf.dtype.itemsize))
  return rows


def _why(error) -> str:
  """A ConfigError's reason without its "config key 'k' = v: " prefix."""
  prefix = f"config key '{error.key}' = {error.value!r}: "
  text = str(error)
  return text[len(prefix):] if text.startswith(prefix) else text


def _check_slices(config, topology: Topology) -> None:
  """mesh.dcn must span exactly the slices (make_mesh fills -1 within a slice only)."""
  from ponder_jax.config import ConfigError  # pylint: disable=import-outside-toplevel
  dcn = {k: int(v) for k, v in config.mesh.dcn.items()}
  spans = math.prod(v for v in dcn.values() if v != -1)
  if topology.slices == 1 and spans > 1:
    raise ConfigError("mesh.dcn", dcn, f"spans {spans} slices, but the topology "
                      f"{topology.describe()} is one slice (--slices=1)")
  if topology.slices > 1 and spans != topology.slices:
    raise ConfigError("mesh.dcn", dcn, f"must multiply to the {topology.slices} slices of "
                      f"{topology.describe()}, e.g. --config.mesh.dcn.data={topology.slices}")


def _check_batch(train, mesh) -> None:
  """The global batch, and each microbatch, must split evenly over the data-parallel devices."""
  from ponder_jax import sharding  # pylint: disable=import-outside-toplevel
  from ponder_jax.config import ConfigError  # pylint: disable=import-outside-toplevel
  batch_devices = math.prod(mesh.shape[axis] for axis in sharding.BATCH)
  size, micro = train.global_batch_size, train.microbatches
  if size % batch_devices:
    raise ConfigError("train.global_batch_size", size, f"must split evenly over the "
                      f"{batch_devices} data-parallel devices (mesh {dict(mesh.shape)})")
  if (size // micro) % batch_devices:
    raise ConfigError("train.microbatches", micro, f"leaves {size // micro} rows per "
                      f"microbatch, which do not split over the {batch_devices} data-parallel "
                      f"devices (mesh {dict(mesh.shape)})")


def build_trainer(config, devices=None, where: str = ""):
  """The Trainer `ponder-train` would build, on `devices` (default: JAX's); a mesh that does not
  match them is a ConfigError naming the mesh key, with `where` (the target) appended."""
  # pylint: disable=import-outside-toplevel
  from ponder_jax.config import ConfigError
  from ponder_jax.experiment import Experiment
  from ponder_jax.train.trainer import Trainer
  exp = Experiment.from_config(config)
  try:
    trainer = Trainer(exp, workdir="", devices=devices)  # the workdir is only touched by run()
  except ConfigError as e:
    if e.key.startswith("mesh.") and where:
      raise ConfigError(e.key, e.value, f"{_why(e)} ({where})") from e
    raise
  _check_batch(exp.train, trainer.mesh)
  return trainer


def _abstract_batch(trainer):
  from ponder_jax.batch import abstract_batch  # pylint: disable=import-outside-toplevel
  exp = trainer.exp
  return abstract_batch(exp.train.global_batch_size, exp.data.seq_len, trainer.batch_sharding)


def _memory(compiled, include_code: bool) -> dict[str, int]:
  """XLA's memory analysis per device. On a TPU the program itself lives in HBM too."""
  memory = compiled.memory_analysis()
  if memory is None:
    return {}
  out = {field: int(getattr(memory, field, 0) or 0)
         for field in ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
                       "temp_size_in_bytes", "generated_code_size_in_bytes")}
  out["total_bytes_per_device"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"]
                                   - out["alias_size_in_bytes"] + out["temp_size_in_bytes"]
                                   + (out["generated_code_size_in_bytes"] if include_code else 0))
  return out


def _cost(compiled) -> dict[str, float]:
  """XLA's per-device cost analysis: flops, HBM bytes and (on TPU) optimal_seconds."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  # not every backend implements it
    return {}
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  cost = cost or {}
  out = {"xla_flops": float(cost.get("flops", 0.0)),
         "xla_bytes_accessed": float(cost.get("bytes accessed", 0.0))}
  if "optimal_seconds" in cost:
    out["xla_optimal_seconds"] = float(cost["optimal_seconds"])
  return out


# The share of a chip's HBM a step may take: the runtime keeps some (libtpu reports 15.75 of a
# v5e's 16 GiB as available), and a step at the very edge fails on the first fragmentation.
HBM_HEADROOM = 0.97


def fits(total_bytes: float, hbm_bytes: float) -> bool:
  """Whether a step of `total_bytes` per chip fits a chip of `hbm_bytes` (HBM_HEADROOM)."""
  return total_bytes <= HBM_HEADROOM * hbm_bytes


_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}


def _out_of_memory(error: Exception, hbm: float | None) -> dict[str, Any] | None:
  """The report of a step XLA's TPU compiler refused for want of HBM (RESOURCE_EXHAUSTED: 'the
  total memory required for HLO temporaries (25.19G) exceeds available HBM (15.75G)'), or None
  for any other error. The bytes needed are XLA's (temporaries alone where it says so)."""
  text = str(error)
  if "RESOURCE_EXHAUSTED" not in text and "Ran out of memory" not in text:
    return None
  sizes = [float(n) * _UNITS[u] for n, u in re.findall(r"\(([\d.]+)([KMGT]?)(?:i?B)?\)", text)]
  needed = int(sizes[0]) if sizes else 0
  first = next((line.strip() for line in text.splitlines() if line.strip()), text)
  return {"fits": False, "out_of_memory": first[:500], "total_bytes_per_device": needed,
          "available_bytes": int(sizes[1]) if len(sizes) > 1 else hbm}


def _hlo_text(compiled) -> str:
  try:
    return compiled.as_text() or ""
  except Exception:  # pylint: disable=broad-except  # not every executable prints
    return ""


def _while_loops(hlo: str) -> int:
  return len(re.findall(r"\swhile\(", hlo))


# HBM traffic of the optimized program, loops counted by their trip counts -------------------
_DTYPE_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
                "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4, "f64": 8,
                "s64": 8, "u64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\](\{[^}]*\})?")
_FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "while", "call",
         "conditional", "after-all", "partition-id", "replica-id", "opt-barrier", "domain",
         "add-dependency"}
_COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "collective-permute", "all-to-all")


def _array_bytes(shape: str) -> float:
  """HBM bytes of a (tuple) shape. Arrays in another memory space S(n) do not count: on-chip
  VMEM S(1), v4's CMEM S(3) and the scalar memories (S(2), S(4), S(6) hold scalars)."""
  total = 0.0
  for dtype, dims, layout in _ARRAY.findall(shape):
    space = re.search(r"S\((\d+)\)", layout or "")
    if space and space.group(1) != "0":
      continue
    sizes = [int(d) for d in dims.split(",") if d]
    order = re.match(r"\{([\d,]*)", layout or "")
    tile = re.search(r":T\(([\d,]+)\)", layout or "")
    if sizes and order and order.group(1) and tile:  # the TPU's tiles pad the minor dimensions
      minor_to_major = [int(d) for d in order.group(1).split(",")]
      physical = [sizes[i] for i in reversed(minor_to_major)]
      tiles = [int(t) for t in tile.group(1).split(",")]
      for k, t in enumerate(reversed(tiles)):
        if k < len(physical):
          physical[-1 - k] = -(-physical[-1 - k] // t) * t
      sizes = physical
    total += _DTYPE_BYTES[dtype] * math.prod(sizes)
  return total


def _closing(text: str, depth: int = 0) -> int:
  """The index of the parenthesis that closes the one open at `depth` (len(text) if none)."""
  for index, ch in enumerate(text):
    depth += (ch == "(") - (ch == ")")
    if depth == 0:
      return index
  return len(text)


def _split_instruction(line: str):
  """'%name = SHAPE opcode(operands), attrs' -> (name, shape, opcode, operand names, attrs,
  the text inside the parentheses)."""
  match = re.match(r"\s*(?:ROOT )?%([^\s=]+) = ", line)
  if not match:
    return None
  rest = line[match.end():]
  if rest.startswith("("):  # a tuple shape: up to the matching parenthesis
    end = _closing(rest)
    shape, rest = rest[:end + 1], rest[end + 1:].lstrip()
  else:
    shape, _, rest = rest.partition(" ")
  opcode, _, rest = rest.partition("(")
  end = _closing(rest, depth=1)
  operands = re.findall(r"%([^\s,()]+)", rest[:end])
  return match.group(1), shape, opcode.strip(), operands, rest[end + 1:], rest[:end]


def _computations(hlo: str) -> tuple[dict[str, list], str]:
  """{computation: [instruction tuples]} and the entry computation's name."""
  comps: dict[str, list] = {}
  entry, current = "", None
  for line in hlo.splitlines():
    header = re.match(r"^(ENTRY )?%?([^\s(]+) \(.*\{\s*$", line)
    if header and not line.startswith(" "):
      current = header.group(2)
      comps[current] = []
      if header.group(1):
        entry = current
    elif line.startswith("}"):
      current = None
    elif current is not None:
      parsed = _split_instruction(line)
      if parsed:
        comps[current].append(parsed)
  return comps, entry


def _trip_count(condition: list) -> int | None:
  """N of a counted loop `i < N` (JAX's scans and fori_loops), read from its condition."""
  values = [int(inside) for _, shape, op, _, _, inside in condition
            if op == "constant" and re.match(r"[su]32\[\]", shape) and inside.strip().isdigit()]
  compares = [attrs for _, _, op, _, attrs, _ in condition if op == "compare"]
  if len(compares) == 1 and "direction=LT" in compares[0] and len(values) == 1:
    return values[0]
  return None


def _fusion_bytes(fused: list, operand_bytes: list[float], out_bytes: float) -> float:
  """HBM bytes of one fusion call as XLA counts them: a parameter read only through
  dynamic-slices costs the slices, an in-place dynamic-update-slice root costs the update."""
  number = {name: int(inside) for name, _, op, _, _, inside in fused
            if op == "parameter" and inside.strip().isdigit()}
  shapes = {name: shape for name, shape, *_ in fused}
  users: dict[str, list] = {name: [] for name in number}
  for _, shape, op, operands, _, _ in fused:
    for position, operand in enumerate(operands):
      if operand in users:
        users[operand].append((op, position, shape))
  by_name = {i[0]: i for i in fused}
  roots = [fused[-1]] if fused else []
  if roots and roots[0][2] == "tuple":
    roots = [by_name[o] for o in roots[0][3] if o in by_name]
  out, in_place = out_bytes, set()
  for _, shape, op, operands, _, _ in roots:
    if op == "dynamic-update-slice" and len(operands) > 1 and operands[0] in users:
      in_place.add(operands[0])
      out -= _array_bytes(shape) - _array_bytes(shapes.get(operands[1], ""))
  total = max(out, 0.0)
  for name, i in number.items():
    full = operand_bytes[i] if i < len(operand_bytes) else 0.0
    uses = users[name]
    if name in in_place:
      continue
    if uses and all(op == "dynamic-slice" and position == 0 for op, position, _ in uses):
      total += min(full, sum(_array_bytes(shape) for _, _, shape in uses))
    else:
      total += full
  return total


def hlo_traffic(hlo: str) -> dict[str, float]:
  """Per-device HBM bytes and collective bytes of an optimized program, each while-loop body
  counted by its trip count (XLA's cost analysis counts it once). Bytes are those of the
  operands and results of every op outside fusions, as XLA's cost analysis counts them; arrays
  the compiler placed in on-chip memory do not count. A loop whose trip count is not a plain
  `i < N` counts once (`unknown_trip_counts`)."""
  comps, entry = _computations(hlo)
  if not entry:
    return {}
  multiplicity: dict[str, float] = {}
  unknown = 0

  def visit(name: str, times: float) -> None:
    nonlocal unknown
    multiplicity[name] = multiplicity.get(name, 0.0) + times
    for _, _, op, _, attrs, _ in comps.get(name, []):
      if op == "while":
        body = re.search(r"body=%?([^\s,]+)", attrs)
        cond = re.search(r"condition=%?([^\s,]+)", attrs)
        trips = _trip_count(comps.get(cond.group(1), [])) if cond else None
        known = re.search(r'"known_trip_count":\{"n":"(\d+)"', attrs)
        if known:
          trips = int(known.group(1))
        if trips is None:
          unknown += 1
        if body:
          visit(body.group(1), times * (trips or 1))
      elif op in ("call", "conditional", "async-start") or op.endswith("-start"):
        for callee in re.findall(r"(?:to_apply|calls|branch_computations=\{[^}]*)=?%([^\s,}]+)",
                                 attrs):
          if callee in comps and not callee.startswith("fused"):
            visit(callee, times)

  visit(entry, 1.0)
  hbm = collective = 0.0
  for name, times in multiplicity.items():
    shapes = {n: shape for n, shape, *_ in comps[name]}
    for _, shape, op, operands, attrs, _ in comps[name]:
      if op in _FREE or op.endswith("-done"):
        continue
      operand_bytes = [_array_bytes(shapes.get(o, "")) for o in operands]
      out = _array_bytes(shape)
      if op == "fusion":
        callee = re.search(r"calls=%?([^\s,]+)", attrs)
        fused = comps.get(callee.group(1), []) if callee else []
        cost = _fusion_bytes(fused, operand_bytes, out) if fused else out + sum(operand_bytes)
      else:
        cost = out + sum(operand_bytes)
      hbm += times * cost
      if op.startswith(_COLLECTIVES):
        collective += times * (out if not op.endswith("-start") else sum(operand_bytes))
  loops = sum(1 for c in comps.values() for i in c if i[2] == "while")
  return {"hbm_bytes": hbm, "collective_bytes": collective, "while_loops": loops,
          "unknown_trip_counts": unknown}


def _save_hlo(path: str, hlo: str) -> None:
  """The optimized TPU program as gzipped text, for reading or re-analysis offline."""
  if path and hlo:
    import gzip  # pylint: disable=import-outside-toplevel
    with gzip.open(path, "wt", encoding="utf-8") as out:
      out.write(hlo)


def estimate(step: dict[str, Any], peak: float, bandwidth: float) -> dict[str, Any]:
  """The roofline of the module docstring for one compiled step's report (per chip:
  `executed_flops_per_chip`, `model_flops_per_chip`, `tokens_per_chip`, XLA's cost analysis and
  `hlo_hbm_bytes`), given the chip's peak FLOP/s and HBM bytes/s."""
  executed, model = step["executed_flops_per_chip"], step["model_flops_per_chip"]
  xla_flops = step.get("xla_flops", 0.0)
  loop_factor = max(executed / xla_flops, 1.0) if xla_flops else 1.0
  if step.get("hlo_hbm_bytes") and not step.get("hlo_unknown_trip_counts"):
    traffic = step["hlo_hbm_bytes"]  # loops by their trip counts
  else:
    traffic = step.get("xla_bytes_accessed", 0.0) * loop_factor  # cruder: loops like FLOPs
  compute, memory = executed / peak, traffic / bandwidth
  seconds = max(compute, memory)
  out = {"loop_factor": loop_factor, "compute_seconds": compute, "memory_seconds": memory,
         "step_seconds": seconds, "bound": "compute" if compute >= memory else "HBM",
         "tokens_per_second_per_chip": step["tokens_per_chip"] / seconds if seconds else 0.0,
         "mfu": model / seconds / peak if seconds else 0.0}
  optimal = step.get("xla_optimal_seconds", -1.0)
  if optimal > 0:  # XLA's own per-op estimate, its loop bodies scaled like the FLOPs
    out["xla_step_seconds"] = optimal * loop_factor
    out["mfu_xla"] = model / out["xla_step_seconds"] / peak
  return out


def reestimate(report: dict[str, Any], step: str, hlo: str) -> None:
  """Recomputes a saved report's traffic and estimate for `step` ('train' | 'decode') from its
  saved program (`--hlo`): the estimate changes with this module, the compile does not."""
  r = report.get(step, {})
  if "executed_flops_per_chip" in r and hlo:
    r.update(_traffic(hlo))
    if report.get("hbm_bytes_per_chip") and "total_bytes_per_device" in r:
      r["fits"] = fits(r["total_bytes_per_device"], report["hbm_bytes_per_chip"])
    if report.get("peak_flops_per_chip") and report.get("hbm_bytes_per_second_per_chip"):
      r.update(estimate(r, report["peak_flops_per_chip"], report["hbm_bytes_per_second_per_chip"]))


def _traffic(hlo: str) -> dict[str, float]:
  traffic = hlo_traffic(hlo) if hlo else {}
  return {"hlo_hbm_bytes": traffic.get("hbm_bytes", 0.0),
          "hlo_collective_bytes": traffic.get("collective_bytes", 0.0),
          "hlo_unknown_trip_counts": traffic.get("unknown_trip_counts", 0)}


def _mean_steps(ponder) -> float:
  return ponder.steps if not ponder.steps_max else (ponder.steps + ponder.steps_max) / 2


def check(config, devices: int) -> dict[str, Any]:
  """Compiles the train step of `config` on the current (simulated) devices; returns a report."""
  from ponder_jax.train.trainer import compiled_flops  # pylint: disable=import-outside-toplevel
  trainer = build_trainer(config)
  compiled, seconds = trainer.compile_train_step(trainer.abstract_state, _abstract_batch(trainer))
  params = sharding_table(trainer.abstract_state.params)
  report = {
      "devices": devices,
      "mesh": dict(trainer.mesh.shape),
      "rules": trainer.exp.mesh.rules,
      "num_params": sum(math.prod(shape) for _, shape, *_ in params),
      "param_bytes_per_device": sum(row[-1] for row in params),
      "opt_state_bytes_per_device": _opt_bytes(trainer),
      "compile_seconds": seconds,
      "flops_per_step": compiled_flops(compiled),
      "params": params,
  }
  report.update(_memory(compiled, include_code=False))
  return report


def _opt_bytes(trainer) -> int:
  import jax  # pylint: disable=import-outside-toplevel
  return sum(math.prod(l.sharding.shard_shape(l.shape)) * l.dtype.itemsize
             for l in jax.tree.leaves(trainer.abstract_state.opt_state) if hasattr(l, "sharding"))


def compile_decode_step(trainer, batch: int, max_len: int):
  """Compiles one decode step for the trainer's mesh: `infer.cache.extend` of one token per row
  over a KV cache of `max_len` slots (s + 1 passes), params and cache sharded as the inference
  Engine places them, the cache donated. Returns (compiled, seconds)."""
  # pylint: disable=import-outside-toplevel
  import time
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec
  from ponder_jax import sharding
  from ponder_jax.infer import cache as cache_lib
  exp, mesh = trainer.exp, trainer.mesh
  steps = exp.ponder.steps_max or exp.ponder.steps
  with jax.set_mesh(mesh), nn.logical_axis_rules(trainer.rules):
    cache = jax.eval_shape(lambda: cache_lib.KVCache.empty(
        trainer.model, passes=steps + 1, offsets_B=jnp.zeros((batch,), jnp.int32),
        max_len=max_len))
    kv = NamedSharding(mesh, nn.logical_to_mesh_axes(cache_lib.CACHE_AXES, trainer.rules))
    rows = NamedSharding(mesh, PartitionSpec(sharding.BATCH))
    scalar = NamedSharding(mesh, PartitionSpec())
    cache_sharding = cache_lib.KVCache(k=kv, v=kv, offsets=rows, length=scalar)
    cache = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         cache, cache_sharding)
    tokens = jax.ShapeDtypeStruct((batch, 1), jnp.int32, sharding=trainer.batch_sharding)
    step = jax.jit(
        lambda params, cache, tokens: cache_lib.extend(trainer.model, params, cache, tokens,
                                                       ponder=exp.ponder, ponder_steps=steps),
        in_shardings=(trainer.state_sharding.params, cache_sharding, trainer.batch_sharding),
        out_shardings=(None, cache_sharding), donate_argnums=1)
    start = time.time()
    compiled = step.lower(trainer.abstract_state.params, cache, tokens).compile()
  return compiled, time.time() - start


def check_topology(config, topology: Topology, *, decode: bool = False, decode_batch: int = 0,
                   decode_len: int = 0, train: bool = True, hlo_prefix: str = "") -> dict[str, Any]:
  """Compiles the train step of `config` (and with `decode` one decode step) with XLA's TPU
  compiler for the chips of `topology`; returns the per-chip report (see the module docstring).
  Raises TopologyError, or ConfigError naming the key of a mesh or batch that does not fit the
  topology."""
  # pylint: disable=import-outside-toplevel
  from ponder_jax import accounting
  devices = tpu_devices(topology)
  _check_slices(config, topology)
  trainer = build_trainer(config, devices, where=f"topology {topology.describe()}")
  exp = trainer.exp
  seq_len = exp.data.seq_len
  kind = devices[0].device_kind
  hbm = accounting.device_spec(accounting.HBM_BYTES, kind)
  peak = accounting.device_spec(accounting.PEAK_BF16_FLOPS, kind)
  bandwidth = accounting.device_spec(accounting.HBM_BYTES_PER_SECOND, kind)
  params = sharding_table(trainer.abstract_state.params)
  report: dict[str, Any] = {
      "topology": topology.name, "accelerator_type": topology.accelerator_type,
      "slices": topology.slices, "chips": len(devices), "device_kind": kind,
      "hbm_bytes_per_chip": hbm, "peak_flops_per_chip": peak,
      "hbm_bytes_per_second_per_chip": bandwidth,
      "mesh": dict(trainer.mesh.shape), "rules": exp.mesh.rules,
      "model": {"family": exp.model.family, "d_model": exp.model.d_model,
                "n_layers": exp.model.n_layers, "vocab_size": exp.model.vocab_size,
                "dtype": exp.model.dtype, "scan_layers": exp.model.scan_layers,
                "remat_policy": exp.model.remat_policy, "attention": exp.model.attention},
      "ponder_steps": _mean_steps(exp.ponder), "ponder_remat": exp.ponder.remat,
      "global_batch_size": exp.train.global_batch_size, "seq_len": seq_len,
      "microbatches": exp.train.microbatches,
      "num_params": sum(math.prod(shape) for _, shape, *_ in params),
      "param_bytes_per_device": sum(row[-1] for row in params),
      "opt_state_bytes_per_device": _opt_bytes(trainer),
      "params": params,
  }
  if train:
    try:
      compiled, seconds = trainer.compile_train_step(trainer.abstract_state,
                                                     _abstract_batch(trainer))
    except Exception as e:  # pylint: disable=broad-except
      report["train"] = _out_of_memory(e, hbm)
      if report["train"] is None:
        raise
      compiled = None
  if train and compiled is not None:
    tokens = exp.train.global_batch_size * seq_len / len(devices)
    mean_s = _mean_steps(exp.ponder)
    full_attention = exp.model.attention != "cudnn"  # einsum / XLA compute the masked half
    model_flops = tokens * accounting.training_flops_per_token(exp.model, seq_len, mean_s)
    executed = tokens * accounting.executed_training_flops_per_token(
        exp.model, seq_len, mean_s, ponder_remat=exp.ponder.remat,
        full_attention=full_attention)
    cost = _cost(compiled)
    hlo = _hlo_text(compiled)
    _save_hlo(hlo_prefix and f"{hlo_prefix}.train.hlo.gz", hlo)
    train_report = {"compile_seconds": seconds, "tokens_per_chip": tokens,
                    "model_flops_per_chip": model_flops, "executed_flops_per_chip": executed,
                    "while_loops": _while_loops(hlo), **_traffic(hlo),
                    **_memory(compiled, include_code=True), **cost}
    if peak and bandwidth:
      train_report.update(estimate(train_report, peak, bandwidth))
    if hbm:
      train_report["fits"] = fits(train_report["total_bytes_per_device"], hbm)
    report["train"] = train_report
  if decode:
    batch = decode_batch or exp.train.global_batch_size
    length = decode_len or seq_len
    try:
      compiled, seconds = compile_decode_step(trainer, batch, length)
    except Exception as e:  # pylint: disable=broad-except
      report["decode"] = _out_of_memory(e, hbm)
      if report["decode"] is None:
        raise
      report["decode"].update(batch=batch, cache_len=length,
                              ponder_steps=exp.ponder.steps_max or exp.ponder.steps)
      decode = False
  if decode:
    steps = exp.ponder.steps_max or exp.ponder.steps
    layers, head, mixture = accounting.pass_flops_per_token(exp.model, length, 1.0)
    flops = batch * ((steps + 1) * (layers + head) + steps * mixture) / len(devices)
    cost = _cost(compiled)
    hlo = _hlo_text(compiled)
    _save_hlo(hlo_prefix and f"{hlo_prefix}.decode.hlo.gz", hlo)
    decode_report = {"batch": batch, "cache_len": length, "ponder_steps": steps,
                     "compile_seconds": seconds, "executed_flops_per_chip": flops,
                     "model_flops_per_chip": flops, "tokens_per_chip": batch / len(devices),
                     "while_loops": _while_loops(hlo), **_traffic(hlo),
                     **_memory(compiled, include_code=True), **cost}
    if peak and bandwidth:
      decode_report.update(estimate(decode_report, peak, bandwidth))
    if hbm:
      decode_report["fits"] = fits(decode_report["total_bytes_per_device"], hbm)
    report["decode"] = decode_report
  return report


# Printing -------------------------------------------------------------------------------------
def _param_lines(params) -> list[str]:
  header = ("parameter", "shape", "dtype", "spec", "per device")
  widths = [max([len(str(row[i])) for row in params] + [len(h)]) for i, h in enumerate(header)]
  lines = ["", "parameter shardings:",
           ("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths))).rstrip()]
  for row in params:
    lines.append("  " + "  ".join(str(v).ljust(w) for v, w in zip(row[:5], widths)).rstrip())
  return lines


def _memory_lines(r: dict[str, Any], code_in_total: bool) -> list[str]:
  if "total_bytes_per_device" not in r:
    return ["  (this backend gives no memory analysis)"]
  total = "total (args+out-alias+temp+code)" if code_in_total else "total (args+out-alias+temp)"
  width = len(total) + 1
  rows = (("arguments", "argument_size_in_bytes"), ("outputs", "output_size_in_bytes"),
          ("aliased (donated)", "alias_size_in_bytes"),
          ("temporaries (activations)", "temp_size_in_bytes"),
          ("generated code", "generated_code_size_in_bytes"), (total, "total_bytes_per_device"))
  return [f"    {label:<{width}}{_bytes(r[key])}" for label, key in rows]


def format_report(report: dict[str, Any], config_name: str) -> str:
  mesh = " ".join(f"{k}={v}" for k, v in report["mesh"].items())
  lines = [
      f"AOT check of {config_name} on {report['devices']} simulated devices",
      f"mesh: {mesh}   rules: {report['rules']}",
      f"parameters: {report['num_params']:,}   compile: {report['compile_seconds']:.1f} s   "
      f"XLA FLOPs/step: {report['flops_per_step']:.3g}",
      "",
      "memory per device:",
      f"  params (sharded)               {_bytes(report['param_bytes_per_device'])}",
      f"  optimizer state (sharded)      {_bytes(report['opt_state_bytes_per_device'])}",
      "  XLA memory analysis of the compiled step:",
      *_memory_lines(report, code_in_total=False),
  ]
  return "\n".join(lines + _param_lines(report["params"]))


def _step_lines(name: str, r: dict[str, Any], hbm: float | None) -> list[str]:
  if "out_of_memory" in r:
    return ["", f"{name}: DOES NOT FIT: XLA's TPU compiler needs "
            f"{r['total_bytes_per_device']:,} bytes ({_bytes(r['total_bytes_per_device']).strip()})"
            f" per chip of {(r['available_bytes'] or 0) / _GIB:.2f} GiB usable",
            f"  {r['out_of_memory']}"]
  lines = ["", f"{name}: compiled in {r['compile_seconds']:.1f} s", "  memory per chip (XLA):",
           *_memory_lines(r, code_in_total=True)]
  if hbm:
    share = r["total_bytes_per_device"] / hbm
    verdict = "fits" if r["fits"] else "DOES NOT FIT"
    lines.append(f"    {verdict}: {share:.0%} of the chip's {hbm / _GIB:g} GiB HBM "
                 f"({r['total_bytes_per_device']:,} bytes; at most {HBM_HEADROOM:.0%} fits)")
  lines += ["  XLA cost analysis per chip (each while-loop body counted once; "
            f"{r['while_loops']} loops):",
            f"    FLOPs {r.get('xla_flops', 0):.4g}   "
            f"HBM bytes {r.get('xla_bytes_accessed', 0):.4g}"
            f"   optimal_seconds {r.get('xla_optimal_seconds', float('nan')):.4g}"
            + ("  (negative: ops XLA could not cost)"
               if r.get("xla_optimal_seconds", 0) < 0 else "")]
  if "step_seconds" in r:
    lines += [
        "  estimate (XLA's cost model as a roofline, not a measurement):",
        f"    executed FLOPs {r['executed_flops_per_chip']:.4g} ({r['loop_factor']:.2f}x XLA's "
        f"count)   HBM bytes {r.get('hlo_hbm_bytes', 0):.4g} (loops by trip count)   "
        f"collectives {r.get('hlo_collective_bytes', 0):.4g} bytes",
        f"    compute {r['compute_seconds'] * 1e3:.3g} ms   HBM {r['memory_seconds'] * 1e3:.3g} ms"
        f"   -> {r['bound']}-bound",
        f"    step {r['step_seconds'] * 1e3:.3g} ms   "
        f"{r['tokens_per_second_per_chip']:,.0f} tokens/s per chip   MFU {r['mfu']:.1%}",
    ]
    if "xla_step_seconds" in r:
      lines.append(f"    XLA's optimal_seconds x loop factor: step "
                   f"{r['xla_step_seconds'] * 1e3:.3g}"
                   f" ms   MFU {r['mfu_xla']:.1%}")
  return lines


def format_tpu_report(report: dict[str, Any], config_name: str) -> str:
  mesh = " ".join(f"{k}={v}" for k, v in report["mesh"].items())
  hbm, peak = report["hbm_bytes_per_chip"], report["peak_flops_per_chip"]
  slices = f" x {report['slices']} slices" if report["slices"] > 1 else ""
  m = report["model"]
  lines = [
      f"AOT check of {config_name} for TPU {report['topology']}{slices} "
      f"({report['accelerator_type']}, {report['chips']} chips of {report['device_kind']}: "
      f"{(hbm or 0) / _GIB:g} GiB HBM, {(peak or 0) / 1e12:g} bf16 TFLOP/s each)",
      f"mesh: {mesh}   rules: {report['rules']}   batch {report['global_batch_size']} x "
      f"{report['seq_len']} in {report['microbatches']} microbatch(es)",
      f"model: {m['family']} d={m['d_model']} layers={m['n_layers']} vocab={m['vocab_size']} "
      f"{m['dtype']}   scan_layers={m['scan_layers']} remat_policy={m['remat_policy']}   "
      f"ponder s={report['ponder_steps']:g} remat={report['ponder_remat']}",
      f"parameters: {report['num_params']:,}   per chip: params "
      f"{_bytes(report['param_bytes_per_device']).strip()}, optimizer state "
      f"{_bytes(report['opt_state_bytes_per_device']).strip()}",
  ]
  if "train" in report:
    lines += _step_lines("train step", report["train"], hbm)
  if "decode" in report:
    d = report["decode"]
    lines += _step_lines(f"decode step (one token for {d['batch']} rows over a {d['cache_len']}"
                         f"-slot cache, s={d['ponder_steps']})", d, hbm)
  return "\n".join(lines + _param_lines(report["params"]))


# Command line ---------------------------------------------------------------------------------
def _fail(message: str, code: int) -> None:
  print(f"ponder-aot: {message}", file=sys.stderr)
  sys.exit(code)


def _main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS
  from ponder_jax.config import ConfigError  # pylint: disable=import-outside-toplevel
  name = config_flags.get_config_filename(f["config"])
  if f.topology:
    try:
      topology = parse_topology(f.topology, f.slices)
      report = check_topology(f.config, topology, decode=f.decode, decode_batch=f.decode_batch,
                              decode_len=f.decode_len, train=f.train, hlo_prefix=f.hlo)
    except TopologyError as e:
      _fail(str(e), 2)
    except ConfigError as e:
      _fail(f"invalid config: {e}", 2)
    except RuntimeError as e:
      _fail(str(e), 2)
    print(format_tpu_report(report, name))
    _write_json(f.json, report)
    limit = f.hbm_gb * _GIB if f.hbm_gb else HBM_HEADROOM * (report["hbm_bytes_per_chip"] or 0)
    for step in ("train", "decode"):
      total = report.get(step, {}).get("total_bytes_per_device")
      if limit and total is not None and total > limit:
        _fail(f"the {step} step does not fit: it needs {total:,} bytes "
              f"({_bytes(total).strip()}) per chip, more than the {limit / _GIB:.2f} GiB it may "
              f"take of a {report['device_kind']} chip's HBM", 1)
    return
  if f.devices < 1:
    raise app.UsageError(f"--devices={f.devices} must be >= 1")
  _use_simulated_devices(f.devices)
  try:
    report = check(f.config, f.devices)
  except ConfigError as e:
    _fail(f"invalid config: {e}", 2)
  except Exception as e:  # pylint: disable=broad-except  # a sharding/lowering error: say so
    _fail(f"the train step does not compile for this mesh: {type(e).__name__}: {e}", 1)
  print(format_report(report, name))
  _write_json(f.json, report)
  total = report.get("total_bytes_per_device")
  if f.hbm_gb and total is not None:
    if total > f.hbm_gb * _GIB:
      _fail(f"needs {_bytes(total).strip()} per device, more than --hbm_gb={f.hbm_gb:g}", 1)
    print(f"fits: {_bytes(total).strip()} of {f.hbm_gb:g} GiB per device")


def _write_json(path: str, report: dict[str, Any]) -> None:
  if path:
    with open(path, "w", encoding="utf-8") as out:
      json.dump(report, out, indent=1, default=str)


def main() -> None:
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_string("topology", "", "Compile for this TPU slice with XLA's TPU compiler "
                      f"(libtpu, the `tpu` extra). Forms: {ACCEPTED_FORMS}.")
  flags.DEFINE_integer("slices", 1, "With --topology: this many slices over DCN "
                       "(set --config.mesh.dcn.* to span them).")
  flags.DEFINE_integer("devices", 8, "Without --topology: simulated CPU devices, the target "
                       "slice's device count.")
  flags.DEFINE_float("hbm_gb", 0.0, "Per-device memory (GiB) to check against: with "
                     "--topology the chip's HBM by default; without it 0 = no check.")
  flags.DEFINE_bool("decode", False, "With --topology: also compile one decode step "
                    "(infer.cache.extend of one token over a KV cache).")
  flags.DEFINE_bool("train", True, "With --topology: compile the train step (--notrain with "
                    "--decode: the decode step only).")
  flags.DEFINE_integer("decode_batch", 0, "Decode rows (0: train.global_batch_size).")
  flags.DEFINE_integer("decode_len", 0, "KV-cache slots (0: data.seq_len).")
  flags.DEFINE_string("json", "", "Also write the report as JSON to this path.")
  flags.DEFINE_string("hlo", "", "With --topology: write the optimized TPU programs to "
                      "<hlo>.train.hlo.gz (and <hlo>.decode.hlo.gz).")
  flags.mark_flags_as_required(["config"])
  app.run(_main)


if __name__ == "__main__":
  main()
