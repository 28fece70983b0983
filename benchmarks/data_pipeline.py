"""Tokens per second of the whole data pipeline (read, tokenize, thought layout, pauses, mix, pack,
batch) in one process, with the demo shape and a procedural + text + thoughts mixture.

Each run builds a fresh train iterator (data.seed = run index), discards one batch (start-up),
then times `--steps` batches; the table reports the median over `--runs`. "slots" counts every
position of a [batch, seq] row, "real tokens" only non-padding ones. Rates are per second of
process CPU time (`time.process_time`: other jobs on a shared machine do not count; with the
default 0 read threads and 0 prefetch the pipeline runs in one thread) and, for reference, per
second of wall-clock time. Prints Markdown for benchmarks/README.md.

  .venv/bin/python benchmarks/data_pipeline.py [--runs 5] [--steps 50] [--batch 16] [--seq 256]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

import machine  # benchmarks/machine.py (the script's folder is on sys.path)

from ponder_jax.data import pipeline
from ponder_jax.data.sources import source_config
from ponder_jax.data.vocab import load_vocabulary


def demo_mixture(args: argparse.Namespace, seed: int):
  """Sort (procedural, 129 tokens an item) : Shakespeare : math with thoughts = 1 : 2 : 1."""
  cfg = pipeline.default_data_config()
  cfg.vocab = args.vocab
  cfg.seq_len = args.seq
  cfg.seed = seed
  cfg.sources.sort = source_config("procedural", task="sort")
  cfg.sources.math = source_config("math")
  cfg.phases.main.weights.update(shakespeare=2.0, sort=1.0, math=1.0)
  cfg.pause.ratio = args.pause
  cfg.read_threads = args.threads
  cfg.prefetch_batches = args.prefetch
  return cfg


def timed_run(args: argparse.Namespace, vocab, seed: int) -> tuple[float, float, float]:
  """(slots per CPU-s, real tokens per CPU-s, slots per wall-s) of one run."""
  it = pipeline.make_train_iterator(demo_mixture(args, seed), vocab, global_batch_size=args.batch)
  next(it)
  real = 0
  cpu, wall = time.process_time(), time.perf_counter()
  for _ in range(args.steps):
    real += int((next(it)["segment_ids"] > 0).sum())
  cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
  it.close()
  slots = args.steps * args.batch * args.seq
  return slots / cpu, real / cpu, slots / wall


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--vocab", default="sentencepiece")
  parser.add_argument("--pause", type=float, default=0.1, help="data.pause.ratio")
  parser.add_argument("--threads", type=int, default=0, help="data.read_threads")
  parser.add_argument("--prefetch", type=int, default=0, help="data.prefetch_batches")
  args = parser.parse_args(argv)
  vocab = load_vocabulary(args.vocab)
  runs = [timed_run(args, vocab, seed) for seed in range(args.runs)]
  slots, real, wall = (statistics.median(r[i] for r in runs) for i in range(3))
  print(f"{machine.describe()}, numpy {np.__version__}, "
        f"load average {os.getloadavg()[0]:.1f}")
  print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}\n")
  print("| batch x seq | vocab | pause | read threads | prefetch | slots per CPU-s (median) | "
        "real tokens per CPU-s | fill | slots per wall-s | runs (slots per CPU-s) |")
  print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
  print(f"| {args.batch} x {args.seq} | {args.vocab} | {args.pause} | {args.threads} | "
        f"{args.prefetch} | {slots:,.0f} | {real:,.0f} | {real / slots:.3f} | {wall:,.0f} | "
        f"{', '.join(f'{r[0]:,.0f}' for r in runs)} |")

if __name__ == "__main__":
  main()
