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


def cpu_family() -> str:
  """'family 25 model 1' from /proc/cpuinfo: tells Zen 4 from Zen 5 where the name does not."""
  fields = {}
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() in ("cpu family", "model") and key.strip() not in fields:
          fields[key.strip()] = value.strip()
  except OSError:
    return "family unknown"
  return f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"


def describe() -> str:
  """'date: ...  machine: <cpu> (<family>), <n> cores, Python <version>'."""
  return (f"date: {datetime.date.today()}  machine: {cpu_name()} ({cpu_family()}), "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")
