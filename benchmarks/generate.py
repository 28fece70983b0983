"""Decoding throughput: KV-cached pondering decode vs full recompute, s = 3 vs s = 0, and
ponder-jax against `transformers.generate(use_cache=True)` on the same weights.

    python benchmarks/generate.py [--repeats 3] [--context 512] [--new 128] [--batch 8]

The model is the benchmark-size GPT-NeoX (Pythia-style: d 256, 4 layers, vocab 8192), built
in transformers with random weights and imported with ponder_jax.convert, so both frameworks
decode the same function. Every figure is greedy decoding of `--new` tokens after a `--context`
token prompt per row, compile excluded (one warm-up call per shape), median of `--repeats` runs
interleaved A B A B in one process:
  cached        Engine.generate: prefill + jitted while-loop decode, one KV cache per pass
  recompute     PonderLM's way: every new token reruns all s + 1 passes over the whole prefix
                (jitted forward on the prefix rounded up to 64 tokens, so it compiles 3 shapes)
  transformers  GPTNeoXForCausalLM.generate(use_cache=True), s = 0 only (no pondering there)
Tokens/s counts generated tokens of the whole batch; prefill is included in every figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ponder_jax import xla_flags  # noqa: E402  (must run before the JAX backend exists)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--context", type=int, default=512)
  parser.add_argument("--new", type=int, default=128)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--ponder", default="0,3", help="ponder steps s of the cached decode")
  parser.add_argument("--recompute-ponder", default="0", help="s of the full-recompute baseline")
  parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
  parser.add_argument("--no-torch", action="store_true")
  return parser.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  xla_flags.apply()
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  import transformers

  import machine
  from ponder_jax.config import PonderConfig
  from ponder_jax.convert import import_hf
  from ponder_jax.infer import Engine
  from ponder_jax.model import ponder as ponder_lib
  from ponder_jax.model.transformer import Transformer

  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  hf_config = transformers.GPTNeoXConfig(
      vocab_size=8192, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
      intermediate_size=1024, rotary_pct=0.25, max_position_embeddings=args.context + args.new,
      use_parallel_residual=True, bos_token_id=1, eos_token_id=2)
  reference = transformers.GPTNeoXForCausalLM(hf_config).eval()
  cfg, params = import_hf(reference)
  model = Transformer(cfg)
  prompts_BxP = np.random.default_rng(0).integers(3, 8192, (args.batch, args.context))
  prompts = prompts_BxP.tolist()
  new_tokens = args.batch * args.new

  def cached(steps: int):
    engine = Engine(model, params, PonderConfig(steps=steps), pad_id=0)
    run = lambda: engine.generate(prompts, max_new_tokens=args.new).tokens
    return run

  def recompute(steps: int):
    ponder_cfg = PonderConfig(steps=steps)
    forward = jax.jit(lambda p, t: ponder_lib.forward(model, p, t, ponder=ponder_cfg,
                                                      ponder_steps=steps))

    def run():
      tokens = np.zeros((args.batch, args.context + args.new), np.int32)
      tokens[:, :args.context] = prompts_BxP
      for i in range(args.new):
        length = args.context + i
        width = min(-(-length // 64) * 64, tokens.shape[1])
        logits = forward(params, jnp.asarray(tokens[:, :width]))
        tokens[:, length] = np.asarray(jnp.argmax(logits[:, length - 1], axis=-1))
      return tokens[:, args.context:]
    return run

  def hf_generate():
    prompt = torch.tensor(prompts_BxP, dtype=torch.long)
    mask = torch.ones_like(prompt)

    def run():
      with torch.no_grad():
        out = reference.generate(prompt, attention_mask=mask, max_new_tokens=args.new,
                                 min_new_tokens=args.new, do_sample=False, use_cache=True,
                                 pad_token_id=0)
      return out[:, args.context:].numpy()
    return run

  arms = {f"cached s={s}": cached(s) for s in map(int, args.ponder.split(","))}
  arms.update({f"recompute s={s}": recompute(s)
               for s in map(int, args.recompute_ponder.split(",")) if args.recompute_ponder})
  if not args.no_torch:
    arms["transformers s=0"] = hf_generate()
  outputs = {name: run() for name, run in arms.items()}  # warm-up: compiles every shape
  if "recompute s=0" in outputs and "cached s=0" in outputs:
    same = (np.asarray(outputs["recompute s=0"]) == np.asarray(outputs["cached s=0"])).mean()
    print(f"cached vs recompute s=0: {same:.1%} of greedy tokens identical")
  if "transformers s=0" in outputs and "cached s=0" in outputs:
    same = (np.asarray(outputs["transformers s=0"]) == np.asarray(outputs["cached s=0"])).mean()
    print(f"cached vs transformers s=0: {same:.1%} of greedy tokens identical")
  seconds = {name: [] for name in arms}
  for _ in range(args.repeats):
    for name, run in arms.items():
      start = time.perf_counter()
      run()
      seconds[name].append(time.perf_counter() - start)

  print(f"\n{machine.describe()}")
  print(f"jax {jax.__version__}, torch {torch.__version__} ({args.threads} threads), "
        f"transformers {transformers.__version__}")
  print(f"model: GPT-NeoX d 256, 4 layers, vocab 8192; batch {args.batch}, context "
        f"{args.context}, {args.new} new tokens, greedy; median of {args.repeats}\n")
  base = statistics.median(seconds[next(iter(arms))])
  print(f"| arm | tokens/s | ms / token step | vs {next(iter(arms))} |")
  print("|---|---|---|---|")
  for name, runs in seconds.items():
    median = statistics.median(runs)
    print(f"| {name} | {new_tokens / median:,.0f} | {1000 * median / args.new:.1f} | "
          f"{base / median:.2f}x |")


if __name__ == "__main__":
  main()
