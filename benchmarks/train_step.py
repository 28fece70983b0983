"""Train-step throughput, MFU, memory and compile time of ponder-jax against PyTorch.

    python benchmarks/train_step.py [--steps N] [--dtype bfloat16] [--ponder 0,1,3]
        [--arms full:0,vocab:0,vocab:1024]

One step = forward + backward + AdamW on a fixed batch, for the demo-size GPT-NeoX (Pythia-style:
rotary 25%, parallel residual, untied) and every ponder step count s in --ponder. The same model in
PyTorch (benchmarks/torch_reference.py: transformers' GPTNeoXForCausalLM inside PonderLM's loop)
starts from the same weights (imported with ponder_jax.convert) and runs in the same process, its
steps interleaved with the JAX steps so that both see the same load from other processes; equal
first-step losses show that both compute the same thing. The table gives medians and the best
step; ratio = PyTorch time / JAX time. MFU counts model FLOPs (accounting.py) against the f32
matmul FLOP/s XLA reaches on this machine, measured in the same run. Memory is XLA's accounting of
the compiled step (arguments + outputs + temporaries - donated buffers), not the process RSS,
which mixes both frameworks. Compile time is lower + compile of the whole step. Results and the
machine they were measured on are in benchmarks/README.md.

--arms times several ponder remat variants (`policy:vocab_chunk`, ponder.remat_policy and
ponder.vocab_chunk; policy `none` is ponder.remat=False) in the same process, their steps
interleaved with each other and with PyTorch's, so that their ratios to each other and to
PyTorch hold under the same load; the first arm is the baseline of the "vs arm 1" column.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ponder_jax import xla_flags  # noqa: E402  (must run before the JAX backend exists)


@dataclasses.dataclass
class Result:
  steps: int
  arm: str
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
  parser.add_argument("--no-remat", action="store_true", help="ponder.remat=False (arm none:0)")
  parser.add_argument("--arms", default="auto:0",
                      help="comma-separated policy:vocab_chunk variants, timed interleaved; "
                           "policy is auto | full | vocab | none (ponder.remat=False)")
  parser.add_argument("--attention", default="auto", choices=("auto", "einsum", "xla"),
                      help="model.attention (auto = einsum on the CPU)")
  parser.add_argument("--xla-flags", default="recommended", choices=("recommended", "none"),
                      help="apply ponder_jax.xla_flags: recommended XLA flags and the host "
                           "allocator setting (flags already in $XLA_FLAGS always apply)")
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
  parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
  return parser.parse_args(argv)


def _ints(text: str) -> list[int]:
  return [int(s) for s in text.split(",") if s]


def _ponder_config(ponder_config_cls, steps: int, arm: str):
  """PonderConfig of one arm 'policy:vocab_chunk' (policy none: ponder.remat=False)."""
  policy, _, chunk = arm.partition(":")
  remat = policy != "none"
  return ponder_config_cls(steps=steps, remat=remat, remat_policy=policy if remat else "auto",
                           vocab_chunk=int(chunk or 0)).validated()


def main(argv=None) -> None:
  args = parse_args(argv)
  arms = ["none:0"] if args.no_remat else [a for a in args.arms.split(",") if a]
  args.allocator_tuned = False
  if args.xla_flags == "recommended":
    xla_flags.apply(allocator=False)
    args.allocator_tuned = xla_flags.tune_host_allocator()
  load_before = os.getloadavg()

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
                    scan_layers=args.scan_layers, attention=args.attention).validated()
  adamw = dict(learning_rate=1e-3, b1=0.9, b2=0.95, weight_decay=0.01)
  tx = optax.adamw(adamw["learning_rate"], adamw["b1"], adamw["b2"],
                   weight_decay=adamw["weight_decay"])
  tokens_BxL = np.random.default_rng(0).integers(0, cfg.vocab_size, (args.batch, args.seq),
                                                 dtype=np.int32)
  batch = {"tokens": jnp.asarray(tokens_BxL)}
  tokens_per_step = args.batch * args.seq

  def compiled_step(steps: int, params, arm: str = arms[0]):
    """(executable, compile seconds, XLA memory bytes); params may be abstract."""
    model = Transformer(cfg, ponder_passes=steps + 1)
    pcfg = _ponder_config(PonderConfig, steps, arm)

    def train_step(params, opt_state, batch):
      def loss_fn(p):
        logits_BxLxV = ponder.forward(model, p, batch["tokens"], ponder=pcfg)
        return cross_entropy(logits_BxLxV, batch)[0]
      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    opt_state = jax.eval_shape(tx.init, params)
    start = time.perf_counter()
    compiled = jax.jit(train_step, donate_argnums=(0, 1)).lower(params, opt_state, batch).compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    memory = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
              - mem.alias_size_in_bytes)
    return compiled, compile_s, memory

  def fresh_params(steps: int):
    model = Transformer(cfg, ponder_passes=steps + 1)
    return nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), batch["tokens"][:1])["params"])

  peak = accounting.measured_matmul_flops()
  if not args.no_torch:
    import torch
    from torch_reference import TorchPonderTrainer

    from ponder_jax.convert.hf import import_hf
    torch_tokens = torch.from_numpy(tokens_BxL.astype(np.int64))

  results, loads = [], []
  for steps in _ints(args.ponder):
    trainer = None
    if args.no_torch:
      params = fresh_params(steps)
    else:
      trainer = TorchPonderTrainer(cfg, threads=args.threads, **adamw)
      params = import_hf(trainer.model)[1]  # the same initial weights in both frameworks
    runs = []  # per arm: [step, params, opt_state, times, first loss, compile s, memory]
    for arm in arms:
      arm_params = jax.tree.map(jnp.copy, params)  # each arm donates its own copy
      step, compile_s, memory = compiled_step(steps, arm_params, arm)
      runs.append([step, arm_params, tx.init(arm_params), [], None, compile_s, memory])
    torch_s, torch_loss = [], float("nan")
    for i in range(args.steps + 1):  # the first step of each is a warm-up
      for run in runs:
        start = time.perf_counter()
        run[1], run[2], loss = run[0](run[1], run[2], batch)
        loss = float(loss)
        run[3].append(time.perf_counter() - start)
        run[4] = loss if run[4] is None else run[4]
      if trainer is not None:
        start = time.perf_counter()
        loss = trainer.step(torch_tokens, steps)
        torch_s.append(time.perf_counter() - start)
        torch_loss = loss if i == 0 else torch_loss
    for arm, run in zip(arms, runs):
      results.append(Result(steps, arm, run[3][1:], torch_s[1:], run[4], torch_loss, run[5],
                            run[6]))
    loads.append(os.getloadavg()[0])
    del runs, params, trainer

  compile_s = {r.steps: r.compile_s for r in results if r.arm == arms[0]}
  for steps in _ints(args.compile_ponder):
    if steps not in compile_s:
      abstract = jax.eval_shape(lambda: fresh_params(steps))
      compile_s[steps] = compiled_step(steps, abstract)[1]
  accounting.measured_matmul_flops.cache_clear()  # the best of a measurement before and after
  peak = max(peak, accounting.measured_matmul_flops())
  report(args, cfg, results, compile_s, peak, tokens_per_step, accounting,
         (load_before[0], *loads), arms)


def report(args, cfg, results, compile_s, peak, tokens_per_step, accounting, loads,
           arms) -> None:
  import jax

  import machine
  med, best = statistics.median, min
  torch = "" if args.no_torch else f", torch {sys.modules['torch'].__version__}"
  print(f"# {machine.describe()}, jax {jax.__version__}{torch}")
  print(f"# XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, host allocator tuned: "
        f"{args.allocator_tuned}, 1-minute load average before and after each s: "
        f"{', '.join(f'{x:.1f}' for x in loads)}")
  print(f"# neox d{cfg.d_model} x{cfg.n_layers} layers, {cfg.n_heads} heads, vocab "
        f"{cfg.vocab_size}, batch {args.batch} x seq {args.seq}, dtype {cfg.dtype}, scan_layers "
        f"{cfg.scan_layers}, attention {cfg.attention}, ponder remat arms "
        f"(policy:vocab_chunk) {', '.join(arms)}; {args.steps} timed steps each, interleaved")
  print(f"# CPU peak: f32 2048^3 matmul in XLA = {peak / 1e9:.1f} GFLOP/s (best of 2 x 5 runs)")
  print("| s | arm | JAX ms median (best) | JAX tok/s | MFU median (best) "
        "| PyTorch ms median (best) | PyTorch tok/s | ratio median (best) | vs arm 1 "
        "| JAX step / step(s=0) | XLA memory MiB | memory / memory(s=0) | compile s "
        "| first loss JAX / PyTorch |")
  print("|---" * 14 + "|")
  for r in results:
    base = next(b for b in results if b.arm == r.arm)  # this arm at the first s
    first = next(b for b in results if b.steps == r.steps)  # arm 1 at this s
    flops = accounting.training_flops_per_token(cfg, args.seq, r.steps)
    mfu = lambda t: accounting.mfu(tokens_per_step / t, flops, peak_per_device=peak)
    jm, jb = med(r.jax_s), best(r.jax_s)
    tm, tb = (med(r.torch_s), best(r.torch_s)) if r.torch_s else (float("nan"),) * 2
    print(f"| {r.steps} | {r.arm} | {jm * 1e3:.0f} ({jb * 1e3:.0f}) | {tokens_per_step / jm:.0f} "
          f"| {mfu(jm):.0%} ({mfu(jb):.0%}) | {tm * 1e3:.0f} ({tb * 1e3:.0f}) "
          f"| {tokens_per_step / tm:.0f} | {tm / jm:.2f}x ({tb / jb:.2f}x) "
          f"| {med(first.jax_s) / jm:.2f}x | {jm / med(base.jax_s):.2f} "
          f"| {r.memory_bytes / 2**20:.0f} "
          f"| {r.memory_bytes / base.memory_bytes:.2f} | {r.compile_s:.1f} "
          f"| {r.jax_loss:.5f} / {r.torch_loss:.5f} |")
  ref = 1 if 1 in compile_s else min(compile_s)  # the target compares s=8 with s=1
  print("compile s: " + ", ".join(f"s={k}: {v:.1f} ({v / compile_s[ref]:.2f}x s={ref})"
                                  for k, v in sorted(compile_s.items())))
  for r in results:
    print(f"raw s={r.steps} {r.arm}: jax {[round(t, 2) for t in r.jax_s]} "
          f"torch {[round(t, 2) for t in r.torch_s]}")


if __name__ == "__main__":
  main()
