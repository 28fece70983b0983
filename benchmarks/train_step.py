"""Train-step throughput, MFU, memory and compile time of ponder-jax against PyTorch.

    python benchmarks/train_step.py [--steps N] [--dtype bfloat16] [--ponder 0,1,3]

The demo-size GPT-NeoX (Pythia-style: rotary 25%, parallel residual, untied) trains one step =
forward + backward + AdamW on a fixed batch, for every ponder step count s in --ponder. The same
model in PyTorch (benchmarks/torch_reference.py) runs in the same process, its steps interleaved
with the JAX steps so that both see the same load from other processes; the table reports medians
and ratio = PyTorch time / JAX time. MFU counts model FLOPs (accounting.py) against the f32 matmul
FLOP/s XLA reaches on this machine, measured in the same run. Memory is XLA's own accounting of the
compiled step (arguments + outputs + temporaries - donated buffers), not the process RSS, which
mixes both frameworks. Compile time is lower + compile of the whole step (--compile-ponder).
Results and the machine they were measured on are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ponder_jax import xla_flags  # noqa: E402  (must run before the JAX backend exists)


@dataclasses.dataclass
class Result:
  steps: int
  jax_s: list[float]
  torch_s: list[float]
  jax_loss: float
  torch_loss: float
  compile_s: float
  memory_bytes: int


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=5, help="timed steps per s (after 1 warm-up)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="matmul input dtype of the JAX model (PyTorch stays f32)")
  parser.add_argument("--ponder", default="0,1,3", help="ponder steps s to time")
  parser.add_argument("--compile-ponder", default="0,1,3,8", help="s to measure compile time of")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--scan-layers", action="store_true", help="model.scan_layers=True")
  parser.add_argument("--xla-flags", default="recommended", choices=("recommended", "none"),
                      help="apply ponder_jax.xla_flags (flags in $XLA_FLAGS always apply)")
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
  parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
  return parser.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.xla_flags == "recommended":
    xla_flags.apply()

  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from ponder_jax import accounting
  from ponder_jax.config import ModelConfig, PonderConfig
  from ponder_jax.loss import cross_entropy
  from ponder_jax.model import ponder
  from ponder_jax.model.transformer import Transformer

  cfg = ModelConfig(family="neox", vocab_size=8192, d_model=256, n_layers=4, n_heads=4,
                    rotary_pct=0.25, max_len=args.seq, dtype=args.dtype,
                    scan_layers=args.scan_layers).validated()
  adamw = dict(learning_rate=1e-3, b1=0.9, b2=0.95, weight_decay=0.01)
  tokens_BxL = np.random.default_rng(0).integers(0, cfg.vocab_size, (args.batch, args.seq),
                                                 dtype=np.int32)
  batch = {"tokens": jnp.asarray(tokens_BxL)}
  tokens_per_step = args.batch * args.seq

  def build(steps: int):
    """(jitted step, params, optimizer state, compile seconds, XLA memory bytes) for s = steps."""
    model = Transformer(cfg, ponder_passes=steps + 1)
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), batch["tokens"][:1])["params"])
    tx = optax.adamw(adamw["learning_rate"], adamw["b1"], adamw["b2"],
                     weight_decay=adamw["weight_decay"])
    opt_state = tx.init(params)
    pcfg = PonderConfig(steps=steps)

    def train_step(params, opt_state, batch):
      def loss_fn(p):
        logits_BxLxV = ponder.forward(model, p, batch["tokens"], ponder=pcfg)
        return cross_entropy(logits_BxLxV, batch)[0]
      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    start = time.perf_counter()
    compiled = jax.jit(train_step, donate_argnums=(0, 1)).lower(params, opt_state, batch).compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    memory = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
              - mem.alias_size_in_bytes)
    return compiled, params, opt_state, compile_s, memory

  peak = accounting.measured_matmul_flops()
  if not args.no_torch:
    import torch
    from torch_reference import TorchPonderTrainer
    torch_tokens = torch.from_numpy(tokens_BxL.astype(np.int64))

  results = []
  for steps in [int(s) for s in args.ponder.split(",")]:
    step, params, opt_state, compile_s, memory = build(steps)
    trainer = None if args.no_torch else TorchPonderTrainer(cfg, threads=args.threads, **adamw)
    jax_s, torch_s, jax_loss, torch_loss = [], [], float("nan"), float("nan")
    for i in range(args.steps + 1):  # the first step of each is a warm-up
      start = time.perf_counter()
      params, opt_state, loss = step(params, opt_state, batch)
      loss = float(loss)
      jax_s.append(time.perf_counter() - start)
      jax_loss = loss if i == 0 else jax_loss
      if trainer is not None:
        start = time.perf_counter()
        loss = trainer.step(torch_tokens, steps)
        torch_s.append(time.perf_counter() - start)
        torch_loss = loss if i == 0 else torch_loss
    results.append(Result(steps, jax_s[1:], torch_s[1:], jax_loss, torch_loss, compile_s, memory))
    del step, params, opt_state, trainer

  compile_only = {}
  timed = {r.steps: r.compile_s for r in results}
  for steps in [int(s) for s in args.compile_ponder.split(",")]:
    compile_only[steps] = timed.get(steps) or build(steps)[3]
  accounting.measured_matmul_flops.cache_clear()  # the best of a measurement before and after
  peak = max(peak, accounting.measured_matmul_flops())

  report(args, cfg, results, compile_only, peak, tokens_per_step, accounting)


def report(args, cfg, results, compile_s, peak, tokens_per_step, accounting) -> None:
  import jax
  print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  print(f"# neox d{cfg.d_model} x{cfg.n_layers} layers, {cfg.n_heads} heads, vocab "
        f"{cfg.vocab_size}, batch {args.batch} x seq {args.seq}, dtype {cfg.dtype}, "
        f"scan_layers {cfg.scan_layers}; {args.steps} timed steps, medians")
  print(f"# CPU peak: f32 {2048}^3 matmul in XLA = {peak / 1e9:.1f} GFLOP/s")
  print("| s | JAX step ms | JAX tok/s | MFU | PyTorch step ms | PyTorch tok/s | ratio "
        "| step / step(s=0) | XLA memory MiB | mem / mem(s=0) | compile s | loss JAX / PyTorch |")
  print("|---" * 12 + "|")
  base = results[0]
  for r in results:
    jax_t = statistics.median(r.jax_s)
    torch_t = statistics.median(r.torch_s) if r.torch_s else float("nan")
    flops = accounting.training_flops_per_token(cfg, args.seq, r.steps)
    mfu = accounting.mfu(tokens_per_step / jax_t, flops, peak_per_device=peak)
    print(f"| {r.steps} | {jax_t * 1e3:.0f} | {tokens_per_step / jax_t:.0f} | {mfu:.1%} "
          f"| {torch_t * 1e3:.0f} | {tokens_per_step / torch_t:.0f} | {torch_t / jax_t:.2f}x "
          f"| {jax_t / statistics.median(base.jax_s):.2f} | {r.memory_bytes / 2**20:.0f} "
          f"| {r.memory_bytes / base.memory_bytes:.2f} | {r.compile_s:.1f} "
          f"| {r.jax_loss:.4f} / {r.torch_loss:.4f} |")
  print("compile time (s): " + ", ".join(f"s={k}: {v:.1f}" for k, v in compile_s.items()))
  for r in results:
    print(f"raw s={r.steps}: jax {[round(t, 3) for t in r.jax_s]} "
          f"torch {[round(t, 3) for t in r.torch_s]}")


if __name__ == "__main__":
  main()
