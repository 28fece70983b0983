"""Ahead-of-time check: compile the train step for a target mesh on simulated CPU devices, before
a pod is rented, and print XLA's per-device memory analysis and every parameter's sharding.

    python -m ponder_jax.aot --config=configs/pretrain.py:pythia-410m --devices=8 \
        --config.mesh.ici.fsdp=8 [--hbm_gb=16]

It builds the Trainer exactly as `ponder-train` would (same config, mesh, logical rules,
optimizer), lowers the step with the Trainer's abstract state (ShapeDtypeStructs carrying their
shardings) and a ShapeDtypeStruct batch, and compiles it: a mesh that does not divide, a rule
that shards a dimension unevenly or a step that does not fit shows here. No data, no params, no
accelerator needed. Memory figures come from XLA:CPU's compilation of the same SPMD program, so
they track the TPU/GPU footprint of params, optimizer state and activations (layouts and fusion
differ by backend: leave headroom). `--hbm_gb` turns the estimate into a pass/fail exit code.

It must own its process: the simulated device count is fixed when JAX's backend starts.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

from absl import app, flags
from ml_collections import config_flags

_GIB = 1024 ** 3


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


def check(config, devices: int) -> dict[str, Any]:
  """Compiles the train step of `config` on the current (simulated) devices; returns a report."""
  # pylint: disable=import-outside-toplevel
  import jax
  from ponder_jax.data import pipeline
  from ponder_jax.experiment import Experiment
  from ponder_jax.train.trainer import Trainer, compiled_flops
  exp = Experiment.from_config(config)
  trainer = Trainer(exp, workdir="")  # the workdir is only touched by run()
  c = exp.config
  empty = pipeline.empty_batch(c.train.global_batch_size, c.data.seq_len, exp.vocab.pad_id)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=trainer.batch_sharding)
           for k, v in empty.items()}
  compiled, seconds = trainer.compile_train_step(trainer.abstract_state, batch)
  memory = compiled.memory_analysis()
  flops = compiled_flops(compiled)
  params = sharding_table(trainer.abstract_state.params)
  opt_leaves = jax.tree.leaves(trainer.abstract_state.opt_state)
  opt_bytes = sum(math.prod(l.sharding.shard_shape(l.shape)) * l.dtype.itemsize
                  for l in opt_leaves if hasattr(l, "sharding"))
  report = {
      "devices": devices,
      "mesh": dict(trainer.mesh.shape),
      "rules": c.mesh.rules,
      "num_params": sum(math.prod(shape) for _, shape, *_ in params),
      "param_bytes_per_device": sum(row[-1] for row in params),
      "opt_state_bytes_per_device": opt_bytes,
      "compile_seconds": seconds,
      "flops_per_step": flops,
      "params": params,
  }
  if memory is not None:
    for field in ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
                  "temp_size_in_bytes", "generated_code_size_in_bytes"):
      report[field] = int(getattr(memory, field, 0))
    report["total_bytes_per_device"] = (report["argument_size_in_bytes"]
                                        + report["output_size_in_bytes"]
                                        - report["alias_size_in_bytes"]
                                        + report["temp_size_in_bytes"])
  return report


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
  ]
  if "total_bytes_per_device" in report:
    lines += [
        "  XLA memory analysis of the compiled step:",
        f"    arguments                    {_bytes(report['argument_size_in_bytes'])}",
        f"    outputs                      {_bytes(report['output_size_in_bytes'])}",
        f"    aliased (donated)            {_bytes(report['alias_size_in_bytes'])}",
        f"    temporaries (activations)    {_bytes(report['temp_size_in_bytes'])}",
        f"    generated code               {_bytes(report['generated_code_size_in_bytes'])}",
        f"    total (args+out-alias+temp)  {_bytes(report['total_bytes_per_device'])}",
    ]
  else:
    lines.append("  (this backend gives no memory analysis)")
  widths = [max([len(str(row[i])) for row in report["params"]] + [len(h)])
            for i, h in enumerate(("parameter", "shape", "dtype", "spec", "per device"))]
  header = ("parameter", "shape", "dtype", "spec", "per device")
  lines += ["", "parameter shardings:",
            ("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths))).rstrip()]
  for row in report["params"]:
    lines.append("  " + "  ".join(str(v).ljust(w) for v, w in zip(row[:5], widths)).rstrip())
  return "\n".join(lines)


def _main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS
  if f.devices < 1:
    raise app.UsageError(f"--devices={f.devices} must be >= 1")
  _use_simulated_devices(f.devices)
  from ponder_jax.config import ConfigError  # pylint: disable=import-outside-toplevel
  name = config_flags.get_config_filename(f["config"])
  try:
    report = check(f.config, f.devices)
  except ConfigError as e:
    print(f"ponder-aot: invalid config: {e}", file=sys.stderr)
    sys.exit(2)
  except Exception as e:  # pylint: disable=broad-except  # a sharding/lowering error: say so
    print(f"ponder-aot: the train step does not compile for this mesh: "
          f"{type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)
  print(format_report(report, name))
  total = report.get("total_bytes_per_device")
  if f.hbm_gb and total is not None:
    if total > f.hbm_gb * _GIB:
      print(f"ponder-aot: needs {_bytes(total).strip()} per device, more than "
            f"--hbm_gb={f.hbm_gb:g}", file=sys.stderr)
      sys.exit(1)
    print(f"fits: {_bytes(total).strip()} of {f.hbm_gb:g} GiB per device")


def main() -> None:
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_integer("devices", 8, "Simulated devices: the target slice's device count.")
  flags.DEFINE_float("hbm_gb", 0.0, "Per-device memory (GiB) to check against, e.g. 16 for "
                     "v5e, 32 for v4, 95 for v5p, 80 for H100 (0: no check).")
  flags.mark_flags_as_required(["config"])
  app.run(_main)


if __name__ == "__main__":
  main()
