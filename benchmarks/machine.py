"""What the benchmarks print about the machine they ran on (recorded in benchmarks/README.md)."""

from __future__ import annotations

import datetime
import os
import platform


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()


def describe() -> str:
  """'date: ...  machine: <cpu>, <n> cores, Python <version>'."""
  return (f"date: {datetime.date.today()}  machine: {cpu_name()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
