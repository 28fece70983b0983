"""Recommended XLA flags and host-allocator settings, applied by entry points before JAX starts.

XLA reads `XLA_FLAGS` once, when JAX creates its first backend (the first computation or
`jax.devices()` call), so entry points call `apply()` first thing; importing jax before is fine.
Flags the user already set win: `apply` only adds flags whose name is not in `XLA_FLAGS` yet.
Every platform's flags are set together: XLA parses all of them in every build and a backend ignores
the others' flags, so nothing here has to initialise a backend to learn the platform.

`apply` also keeps freed host memory inside the process (glibc only, see `tune_host_allocator`):
on the CPU that removes the page faults that otherwise cost about a fifth of every train step.
What each setting gave is measured by benchmarks/train_step.py and recorded in
benchmarks/README.md. This module does not choose devices or meshes (sharding.py does).
"""

from __future__ import annotations

import ctypes
import os
import platform

RECOMMENDED: dict[str, tuple[str, ...]] = {
    # Nothing yet: on the AVX2 CPU of benchmarks/README.md the YNNPACK fusion-type flag of
    # PERF_NOTES did not help (the table there); XLA's defaults stay.
    "cpu": (),
    # Overlaps collectives (FSDP all-gathers, gradient reduce-scatters) with compute.
    "gpu": ("--xla_gpu_enable_latency_hiding_scheduler=true",),
    # libtpu's defaults are tuned already; its own flags would go in LIBTPU_INIT_ARGS.
    "tpu": (),
}

# mallopt(3) parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def _name(flag: str) -> str:
  return flag.split("=", 1)[0]


def merged(existing: str, flags: tuple[str, ...] | list[str]) -> str:
  """`existing` XLA_FLAGS plus every flag of `flags` whose name it does not set already."""
  present = {_name(f) for f in existing.split()}
  added = [f for f in flags if _name(f) not in present]
  return " ".join(existing.split() + added)


def tune_host_allocator() -> bool:
  """Makes glibc reuse freed memory instead of handing it back to the kernel; True if applied.

  XLA:CPU mallocs every executable's temporaries and outputs per call. glibc serves blocks
  this large with fresh mmaps (or trims them off the heap when freed), so every train step
  page-faults its whole working set in again: ~240k faults, 0.3-0.6 s of a 2 s step at the demo
  size. One arena, no mmap and no trimming make steady-state steps fault-free, at the price of a
  process that keeps its peak heap. Must run before JAX's thread pools start (arenas are
  per-thread); harmless, and a no-op, where the C library is not glibc.
  """
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return False
  try:
    mallopt = ctypes.CDLL("libc.so.6").mallopt
  except (OSError, AttributeError):
    return False
  return all([mallopt(_M_ARENA_MAX, 1), mallopt(_M_MMAP_MAX, 0),
              mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)])  # an int: the largest threshold


def apply(platforms: tuple[str, ...] = ("cpu", "gpu", "tpu"), allocator: bool = True) -> str:
  """Adds the recommended flags of `platforms` to os.environ['XLA_FLAGS'] and, with `allocator`,
  tunes the host allocator; returns the resulting XLA_FLAGS.

  Call before the first JAX computation: flags set after the backend exists have no effect.
  """
  flags = [f for p in platforms for f in RECOMMENDED[p]]
  os.environ["XLA_FLAGS"] = merged(os.environ.get("XLA_FLAGS", ""), flags)
  if allocator:
    tune_host_allocator()
  return os.environ["XLA_FLAGS"]
