"""Tokens per second of every procedural generator, one process, default parameters.

Each run reads consecutive items from a fresh source for at least `--seconds` of this process's
CPU time; the table reports the median over `--repeats` runs (items are generated on demand, so
this is the cost a grain worker pays per item, random-generator setup included). Time is CPU
time (`time.process_time`; the generators are single-threaded), so other work on a shared
machine does not count against them. Prints a Markdown table for benchmarks/README.md.

  .venv/bin/python benchmarks/data_generators.py [--repeats 5] [--seconds 1.0] [--tasks dyck,...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

import machine  # benchmarks/machine.py (the script's folder is on sys.path)

from ponder_jax.data.procedural import PROCEDURAL_TASKS, make_procedural_source


def tokens_per_second(task: str, seconds: float, start: int) -> tuple[float, float, int]:
  """(tokens/s, target tokens/s, item length) of one timed run starting at item `start`."""
  source = make_procedural_source(task, seed=0)
  tokens = targets = 0
  index = start
  begin = time.process_time()
  while (elapsed := time.process_time() - begin) < seconds:
    item = source[index]
    tokens += len(item["tokens"])
    targets += int(item["loss_mask"].sum())
    index += 1
  return tokens / elapsed, targets / elapsed, len(item["tokens"])


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--seconds", type=float, default=1.0)
  parser.add_argument("--tasks", default=",".join(PROCEDURAL_TASKS))
  args = parser.parse_args(argv)

  print(f"{machine.describe()}, numpy {np.__version__}")
  print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}\n")
  print("| task | params (defaults) | tokens/item | tokens per CPU-s (median) "
        "| targets per CPU-s |")
  print("|---|---|---:|---:|---:|")
  for task in args.tasks.split(","):
    runs = [tokens_per_second(task, args.seconds, start=r * 10**6) for r in range(args.repeats)]
    length = runs[0][2]
    params = PROCEDURAL_TASKS[task].Params()
    fields = ", ".join(f"{k}={v}" for k, v in vars(params).items())
    print(f"| {task} | {fields} | {length} | {statistics.median(r[0] for r in runs):,.0f} | "
          f"{statistics.median(r[1] for r in runs):,.0f} |")


if __name__ == "__main__":
  main()
