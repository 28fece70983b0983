"""Which preset fits which TPU slice, and how fast XLA's cost model says it would run there.

    nice -n 19 python benchmarks/tpu_aot.py [--grid minimal|full] [--out runs/tpu_aot]

Every cell compiles the exact train step of `configs/pretrain.py:<preset>` with `ponder.steps` =
s and a sharding preset for a TPU topology, with XLA's TPU compiler on this CPU host
(`ponder-aot --topology`, libtpu from the `tpu` extra). Microbatches go up 1, 2, 4, ... until the
step fits the chip's HBM (a step that does not fit is refused by the compiler within seconds),
so a cell reports the fewest microbatches that fit, the memory per chip and the estimated MFU.
The estimate is XLA's cost model (the roofline of ponder_jax/aot.py: executed FLOPs at the
chip's bf16 peak or XLA's HBM bytes at its bandwidth), not a measurement.

Each compile is its own `python -m ponder_jax.aot` process; its JSON report is kept under --out,
so an interrupted run resumes where it stopped. Progress (one line per compile, with its time)
goes to <out>/progress.log; the Markdown table to stdout and <out>/table.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PRESETS = ("pythia-160m", "pythia-410m", "pythia-1b", "pythia-1.4b", "llama-1b",
           "tinyllama-1.1b")
ONE_B = ("pythia-1b", "pythia-1.4b", "llama-1b", "tinyllama-1.1b")
TOPOLOGIES = ("v5litepod-16", "v5litepod-256", "v4-32", "v5p-64")
# Sharding presets: logical-axis rules and the ICI mesh they run on (-1 fills the slice).
SHARDINGS = {
    "fsdp": {"mesh.rules": "fsdp", "mesh.ici.data": 1, "mesh.ici.fsdp": -1, "mesh.ici.tensor": 1},
    "fsdp_tp4": {"mesh.rules": "fsdp_tp", "mesh.ici.data": 1, "mesh.ici.fsdp": -1,
                 "mesh.ici.tensor": 4},
    "dp": {"mesh.rules": "dp", "mesh.ici.data": -1, "mesh.ici.fsdp": 1, "mesh.ici.tensor": 1},
}
# FSDP without XLA's windowed einsums (collective matmuls): the weights are all-gathered whole
# instead of multiplied window by window into f32 partial sums that go through HBM each window.
NO_WINDOWED_EINSUM = ("--xla_tpu_enable_windowed_einsum_for_all_gather=false "
                      "--xla_tpu_enable_windowed_einsum_for_reduce_scatter=false")
SHARDINGS["fsdp_nowe"] = dict(SHARDINGS["fsdp"], LIBTPU_INIT_ARGS=NO_WINDOWED_EINSUM)
SHARDINGS["fsdp_tp4_nowe"] = dict(SHARDINGS["fsdp_tp4"], LIBTPU_INIT_ARGS=NO_WINDOWED_EINSUM)
# ... and keeping the layers' matmul outputs without a batch dimension (recomputing attention).
SHARDINGS["fsdp_nowe_dots"] = dict(SHARDINGS["fsdp_nowe"],
                                   **{"model.remat_policy": "dots_no_batch"})
MICROBATCHES = (1, 2, 4, 8, 16, 32)
# Cells at a fixed microbatch count beyond the fewest that fit: with fewer rows per microbatch
# XLA stops choosing windowed einsums for FSDP's all-gathers.
FIXED = [("pythia-1b", 3, "v5litepod-16", "fsdp", 8)]


def grid(name: str) -> list[tuple[str, int, str, str]]:
  """(preset, s, topology, sharding) cells, most wanted first: the 1B-class presets at s = 0 and
  3 on v5e-16 with FSDP and against FSDP + 4-way tensor parallelism, the small presets there
  (and plain data parallelism for the smallest), then the 1B-class presets on the other slices;
  `full` adds every preset x s in {0, 1, 3} x sharding on every slice."""
  v5e16 = TOPOLOGIES[0]
  first = [(p, s, v5e16, "fsdp") for p in ("pythia-1b", "llama-1b") for s in (0, 3)]
  first += [(p, s, v5e16, sh) for sh in ("fsdp_nowe", "fsdp_tp4") for p in ("pythia-1b",)
            for s in (0, 3)]
  first += [(p, s, v5e16, "fsdp_nowe") for p in ("llama-1b",) for s in (0, 3)]
  first += [("pythia-1b", 3, v5e16, "fsdp_nowe_dots"), ("pythia-1b", 3, v5e16, "fsdp_tp4_nowe"),
            ("llama-1b", 3, v5e16, "fsdp_tp4")]
  first += [(p, s, v5e16, "fsdp") for p in PRESETS for s in (0, 3)]
  first += [("pythia-160m", s, v5e16, "dp") for s in (0, 3)]
  first += [("pythia-410m", 3, "v4-32", "fsdp")]  # the pod launcher's README example
  first += [(p, s, t, "fsdp") for t in TOPOLOGIES[1:] for p in ONE_B for s in (0, 3)]
  first = list(dict.fromkeys(first))
  if name == "minimal":
    return first
  rest = [(p, s, t, sh) for t in TOPOLOGIES for sh in SHARDINGS for p in PRESETS
          for s in (0, 1, 3)]
  return first + [cell for cell in rest if cell not in first]


def _log(out: str, line: str) -> None:
  stamp = time.strftime("%H:%M:%S")
  with open(os.path.join(out, "progress.log"), "a", encoding="utf-8") as f:
    f.write(f"{stamp} {line}\n")
  print(f"{stamp} {line}", file=sys.stderr, flush=True)


def compile_cell(out: str, preset: str, s: int, topology: str, shard: str, micro: int,
                 extra: dict | None = None, compile_missing: bool = True,
                 timeout: int = 3600) -> dict:
  """One ponder-aot run (or its kept JSON, its estimate redone from the kept program); returns
  its report, or {'error': ...}."""
  from ponder_jax import aot  # pylint: disable=import-outside-toplevel
  overrides = {"ponder.steps": s, "train.microbatches": micro, **SHARDINGS[shard], **(extra or {})}
  env = {k: overrides.pop(k) for k in list(overrides) if k.isupper()}  # e.g. LIBTPU_INIT_ARGS
  tag = "_".join([preset, f"s{s}", topology, shard, f"mb{micro}"]
                 + [f"{k.split('.')[-1]}-{v}" for k, v in (extra or {}).items()])
  path = os.path.join(out, f"{tag}.json")
  hlo = os.path.join(out, f"{tag}.train.hlo.gz")
  if not os.path.exists(path) and not compile_missing:
    return {}
  if not os.path.exists(path):
    command = [sys.executable, "-m", "ponder_jax.aot", f"--config=configs/pretrain.py:{preset}",
               f"--topology={topology}", f"--json={path}.tmp", f"--hlo={os.path.join(out, tag)}"]
    command += [f"--config.{k}={v}" for k, v in overrides.items()]
    start = time.time()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            check=False, env={**os.environ, **env})
    if os.path.exists(f"{path}.tmp"):
      os.replace(f"{path}.tmp", path)
    else:
      with open(path, "w", encoding="utf-8") as f:
        json.dump({"error": (result.stderr.strip().splitlines() or ["no output"])[-1][:400]}, f)
    with open(path, encoding="utf-8") as f:
      report = json.load(f)
    train = report.get("train", {})
    state = ("error: " + report["error"] if "error" in report else
             "fits" if train.get("fits") else "does not fit")
    _log(out, f"{tag}: {state} ({time.time() - start:.0f} s)")
  with open(path, encoding="utf-8") as f:
    report = json.load(f)
  if os.path.exists(hlo):
    with gzip.open(hlo, "rt", encoding="utf-8") as f:
      aot.reestimate(report, "train", f.read())
  return report


def _next_microbatches(report: dict, micro: int) -> int | None:
  """The microbatch count that should fit after `micro` did not: temporaries shrink about in
  proportion to the rows per microbatch, the rest (state, program) does not. None: nothing
  will fit."""
  t = report.get("train", {})
  hbm = report.get("hbm_bytes_per_chip") or 0
  usable = 0.97 * hbm
  if "out_of_memory" in t:  # XLA's early refusal names the temporaries only
    temp = t["total_bytes_per_device"]
    other = 2 * (report.get("param_bytes_per_device", 0)
                 + report.get("opt_state_bytes_per_device", 0))
  else:
    temp = t.get("temp_size_in_bytes", 0)
    other = t.get("total_bytes_per_device", 0) - temp
  if not temp or other >= usable:
    return None
  factor = max(2, 2 ** math.ceil(math.log2(temp / (usable - other))))
  return micro * factor


def fit_cell(out: str, preset: str, s: int, topology: str, shard: str, start: int = 1,
             extra: dict | None = None, compile_missing: bool = True) -> tuple[int, dict]:
  """The fewest microbatches (a power of two from `start`) whose step fits, and that report (or
  the last refusal)."""
  report: dict = {}
  if not compile_missing:  # the fewest kept microbatches that fit, else the last kept refusal
    found = (0, {})
    for micro in MICROBATCHES:
      kept = compile_cell(out, preset, s, topology, shard, micro, extra, False)
      if kept and (not found[1] or not found[1].get("train", {}).get("fits")):
        found = (micro, kept)
    return found
  micro = start
  while micro in MICROBATCHES:
    report = compile_cell(out, preset, s, topology, shard, micro, extra, compile_missing)
    if not report:
      return micro, report
    if "error" in report or report.get("train", {}).get("fits"):
      return micro, report
    following = _next_microbatches(report, micro)
    if following is None:
      return micro, report
    micro = following
  return micro, report


def row(preset: str, s: int, topology: str, shard: str, micro: int, report: dict) -> str:
  if "error" in report:
    return f"| {preset} | {s} | {topology} | {shard} | - | error | {report['error'][:80]} |||||"
  t = report["train"]
  hbm = report["hbm_bytes_per_chip"]
  gib = t["total_bytes_per_device"] / 2 ** 30
  if not t.get("fits"):
    return (f"| {preset} | {s} | {topology} | {shard} | {micro} | no | "
            f"{'>= ' if 'out_of_memory' in t else ''}{gib:.1f} ({gib * 2 ** 30 / hbm:.0%}) "
            f"| | | | |")
  xla = f"{t['mfu_xla']:.0%}" if "mfu_xla" in t else "n/a"
  return (f"| {preset} | {s} | {topology} | {shard} | {micro} | yes | {gib:.1f} "
          f"({gib * 2 ** 30 / hbm:.0%}) | {t['step_seconds']:.2f} | "
          f"{t['tokens_per_second_per_chip']:,.0f} | **{t['mfu']:.0%}** ({t['bound']}) | {xla} |")


HEADER = ("| preset | s | slice | sharding | microbatches | fits | GiB per chip (of HBM) | "
          "est. step s | est. tokens/s per chip | est. MFU (bound) | XLA optimal_seconds MFU |\n"
          "|---|---:|---|---|---:|---|---:|---:|---:|---:|---:|")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--grid", choices=("minimal", "full"), default="minimal")
  parser.add_argument("--out", default=os.path.join(ROOT, "runs", "tpu_aot"))
  parser.add_argument("--presets", default="", help="comma list: only these presets")
  parser.add_argument("--render", action="store_true",
                      help="compile nothing: the table of the kept reports only")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  import machine  # pylint: disable=import-outside-toplevel  # benchmarks/machine.py
  if not args.render:
    _log(args.out, f"start: grid {args.grid} on {machine.describe()}")
  lines = [HEADER]
  fitted: dict[tuple, int] = {}
  for preset, s, topology, shard in grid(args.grid):
    if args.presets and preset not in args.presets.split(","):
      continue
    # More passes never need fewer microbatches: start from the most a smaller s needed.
    start = max([m for (p, s0, t, sh), m in fitted.items()
                 if (p, t, sh) == (preset, topology, shard) and s0 <= s] or [1])
    micro, report = fit_cell(args.out, preset, s, topology, shard, start,
                             compile_missing=not args.render)
    if not report:
      continue
    if report.get("train", {}).get("fits"):
      fitted[(preset, s, topology, shard)] = micro
    lines.append(row(preset, s, topology, shard, micro, report))
    with open(os.path.join(args.out, "table.md"), "w", encoding="utf-8") as f:
      f.write("\n".join(lines) + "\n")
  for preset, s, topology, shard, micro in FIXED:
    report = compile_cell(args.out, preset, s, topology, shard, micro,
                          compile_missing=not args.render)
    if report:
      lines.append(row(preset, s, topology, shard, micro, report))
  with open(os.path.join(args.out, "table.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
