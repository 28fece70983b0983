"""The trainer's per-step overhead over the bare jitted step, and the demo's tokens/s and MFU.

    python benchmarks/trainer_overhead.py [--config configs/demo.py] [--steps 40] [--repeats 3]

Both sides run the same compiled step (Trainer.compile_train_step) of the config's model on the
config's data, on this process's devices:
  bare     a loop of `batch = make_global_batch(next(iterator)); compiled(state, batch, rng)`
           with nothing else, timed from first dispatch to the last result (and, for reference,
           the same loop over batches drawn beforehand: the step alone, without data work,
           which on a CPU competes with the step for the same cores);
  trainer  Trainer.run() with every step logged (log_every=1), no checkpoints but the final one,
           no eval but the final one; its step time is the median `step_seconds` of
           metrics.jsonl (the interval between consecutive metric fetches, eval and save time
           excluded), so it includes drawing and placing the next batch, the one-step-late metric
           fetch, per-source losses, the NaN guard and the writers.
Overhead = trainer / bare - 1, medians over --repeats runs, interleaved.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ponder_jax import xla_flags  # noqa: E402

xla_flags.apply()

import jax  # noqa: E402

from ponder_jax import accounting, sharding  # noqa: E402
from ponder_jax.data import pipeline  # noqa: E402
from ponder_jax.experiment import Experiment  # noqa: E402
from ponder_jax.sweep import load_config  # noqa: E402
from ponder_jax.train.metrics import read_metrics  # noqa: E402
from ponder_jax.train.trainer import Trainer  # noqa: E402


def bare_seconds_per_step(exp: Experiment, steps: int) -> tuple[float, float]:
  """(seconds per step drawing batches in the loop, seconds per step over drawn batches)."""
  trainer = Trainer(exp, tempfile.mkdtemp())
  it = pipeline.make_train_iterator(exp.data, exp.vocab,
                                    global_batch_size=exp.train.global_batch_size,
                                    process_index=0, process_count=1)
  draw = lambda: sharding.make_global_batch(next(it), trainer.mesh)  # noqa: E731
  state = trainer.init_state()
  batch = draw()
  compiled, _ = trainer.compile_train_step(state, batch)
  rng = jax.random.key(exp.train.seed)
  state, metrics = compiled(state, batch, rng)  # warm-up
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, draw(), rng)
  jax.block_until_ready((state, metrics))
  with_data = (time.perf_counter() - start) / steps
  batches = [draw() for _ in range(steps)]
  start = time.perf_counter()
  for batch in batches:
    state, metrics = compiled(state, batch, rng)
  jax.block_until_ready((state, metrics))
  return with_data, (time.perf_counter() - start) / steps


def trainer_seconds_per_step(exp: Experiment, steps: int) -> tuple[float, float]:
  workdir = tempfile.mkdtemp()
  Trainer(exp, workdir).run()
  rows = [r for r in read_metrics(workdir) if "step_seconds" in r]
  timed = [r for r in rows if r["step"] > 2 and "save_seconds" not in r and "eval_seconds" not in r]
  return (statistics.median(r["step_seconds"] for r in timed),
          statistics.median(r["mfu"] for r in timed if "mfu" in r))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/demo.py")
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  config = load_config(args.config)
  # Only the last (main) phase, for `steps` steps: a steady state to time.
  for name in config.data.phase_order.split(",")[:-1]:
    config.data.phases[name].steps = 0
  config.train.update(steps=args.steps, log_every=1, eval_every=0, eval_batches=1)
  config.checkpoint.update(every=0, async_save=False)
  config.metrics.update(tensorboard=True, progress_bar=False, plot=False)
  exp = Experiment.from_config(config)
  tokens = config.train.global_batch_size * config.data.seq_len
  bare, step_only, wrapped, mfus = [], [], [], []
  for _ in range(args.repeats):
    with_data, alone = bare_seconds_per_step(exp, args.steps)
    bare.append(with_data)
    step_only.append(alone)
    seconds, mfu = trainer_seconds_per_step(exp, args.steps)
    wrapped.append(seconds)
    mfus.append(mfu)
  b, w = statistics.median(bare), statistics.median(wrapped)
  print(f"config {args.config}: {config.model.family} d={config.model.d_model} "
        f"L={config.model.n_layers} s={config.ponder.steps} batch {config.train.global_batch_size}"
        f" x seq {config.data.seq_len}; {jax.device_count()} {jax.devices()[0].platform} device(s)")
  print(f"CPU peak (f32 XLA matmul): {accounting.peak_flops_per_device() / 1e9:.0f} GFLOP/s")
  print(f"| | s/step (median of {args.repeats}) | tokens/s | MFU |")
  print("|---|---:|---:|---:|")
  a = statistics.median(step_only)
  print(f"| jitted step, batches drawn beforehand | {a:.4f} | {tokens / a:,.0f} | |")
  print(f"| bare loop: draw batch + jitted step | {b:.4f} | {tokens / b:,.0f} | |")
  print(f"| Trainer.run | {w:.4f} | {tokens / w:,.0f} | {statistics.median(mfus):.1%} |")
  print(f"overhead: {w / b - 1:+.1%}  (runs: bare {[round(x, 4) for x in bare]}, "
        f"trainer {[round(x, 4) for x in wrapped]})")


if __name__ == "__main__":
  main()
