"""Recommended XLA flags per platform, applied by entry points before the backend initialises.

XLA reads `XLA_FLAGS` once, when JAX creates its first backend (the first computation or
`jax.devices()` call), so entry points call `apply()` first thing; importing jax before is fine.
Flags the user already set win: `apply` only adds flags whose name is not in `XLA_FLAGS` yet.
Every platform's flags are set together: XLA parses all of them in every build and a backend ignores
the others' flags, so nothing here has to initialise a backend to learn the platform. What each flag
gave is measured by benchmarks/train_step.py and recorded in benchmarks/README.md. This module does
not choose devices or meshes (sharding.py does).
"""

from __future__ import annotations

import os

RECOMMENDED: dict[str, tuple[str, ...]] = {
    # Keeps YNNPACK's fast dots but stops it from fusing the vocabulary-sized dot + softmax
    # graphs of the LM head and the ponder mixture (benchmarks/README.md, "Train step").
    "cpu": ("--xla_cpu_experimental_ynn_fusion_type=individual_dot",),
    # Overlaps collectives (FSDP all-gathers, gradient reduce-scatters) with compute.
    "gpu": ("--xla_gpu_enable_latency_hiding_scheduler=true",),
    # libtpu's defaults are tuned already; its own flags would go in LIBTPU_INIT_ARGS.
    "tpu": (),
}


def _name(flag: str) -> str:
  return flag.split("=", 1)[0]


def merged(existing: str, flags: tuple[str, ...] | list[str]) -> str:
  """`existing` XLA_FLAGS plus every flag of `flags` whose name it does not set already."""
  present = {_name(f) for f in existing.split()}
  added = [f for f in flags if _name(f) not in present]
  return " ".join(existing.split() + added)


def apply(platforms: tuple[str, ...] = ("cpu", "gpu", "tpu")) -> str:
  """Adds the recommended flags of `platforms` to os.environ['XLA_FLAGS']; returns the result.

  Call before the first JAX computation: flags set after the backend exists have no effect.
  """
  flags = [f for p in platforms for f in RECOMMENDED[p]]
  os.environ["XLA_FLAGS"] = merged(os.environ.get("XLA_FLAGS", ""), flags)
  return os.environ["XLA_FLAGS"]
