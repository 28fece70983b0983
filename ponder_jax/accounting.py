"""Parameter counts and analytic training FLOPs per token.

FLOP convention (as MaxText's `calculate_tflops_training_per_device`):
  * matmuls only, 2 * m * n * k each; norms, softmax, embedding gathers and the optimizer are
    not counted;
  * causal attention is halved: QK^T and AV cost 2 * 2 * L * heads * head_dim per token, times 1/2;
  * a pondering forward is s + 1 full passes (layers and LM head) plus s mixtures P @ E_in of
    2 * V * d each;
  * training = 3 x forward (the backward costs two forwards); rematerialisation is not counted:
    these are model FLOPs, the numerator of MFU.

MFU divides those model FLOP/s by the devices' peak: a bf16 dense-matmul table by device kind on
GPU and TPU (vendor datasheets, no sparsity), and on the CPU the f32 matmul FLOP/s that XLA
actually reaches on this machine, measured once per process (a datasheet peak means little for a
shared, virtualised CPU).
"""

from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp

from ponder_jax.config import ModelConfig


def count_params(params) -> int:
  """Number of scalars in a parameter tree (boxed or not)."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


def analytic_param_count(cfg: ModelConfig) -> int:
  """The parameter count `Transformer(cfg).init` produces, without building it."""
  d, h, g, k, f, v = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff,
                      cfg.vocab_size)
  bias = cfg.family != "llama"
  norm = d if cfg.family == "llama" else 2 * d
  attention = d * h * k + d * 2 * g * k + h * k * d + bias * (h * k + 2 * g * k + d)
  if cfg.family == "llama":
    mlp = 3 * d * f
  else:
    mlp = 2 * d * f + bias * (f + d)
  per_layer = attention + mlp + 2 * norm
  embeddings = v * d * (1 if cfg.tie_embeddings else 2)
  positions = cfg.max_len * d if cfg.family == "gpt2" else 0
  return cfg.n_layers * per_layer + norm + embeddings + positions


def forward_flops_per_token(cfg: ModelConfig, seq_len: int, ponder_steps: int = 0) -> float:
  """Matmul FLOPs of one forward per token, pondering included (see module docstring)."""
  d, h, g, k, f, v = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff,
                      cfg.vocab_size)
  projections = 2 * d * (h * k + 2 * g * k) + 2 * h * k * d
  attention = 0.5 * (2 * 2 * seq_len * h * k)
  mlp = 2 * d * f * (3 if cfg.family == "llama" else 2)
  one_pass = cfg.n_layers * (projections + attention + mlp) + 2 * d * v
  mixture = 2 * v * d
  return (ponder_steps + 1) * one_pass + ponder_steps * mixture


def training_flops_per_token(cfg: ModelConfig, seq_len: int, ponder_steps: int = 0) -> float:
  return 3.0 * forward_flops_per_token(cfg, seq_len, ponder_steps)


# Peak dense bf16 FLOP/s per device, matched as substrings of `device.device_kind` (lower case),
# most specific first. JAX reports TPU v5e as "TPU v5 lite", v6e as "TPU v6 lite" and v5p as
# "TPU v5p" or "TPU v5".
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("h200", 989e12),
    ("h100 pcie", 756e12),
    ("h100", 989e12),  # SXM
    ("a100", 312e12),
    ("l40s", 362e12),
    ("l4", 121e12),
    ("tpu v6 lite", 918e12),
    ("tpu v6e", 918e12),
    ("tpu v5 lite", 197e12),
    ("tpu v5e", 197e12),
    ("tpu v5p", 459e12),
    ("tpu v5", 459e12),
    ("tpu v4", 275e12),
)


@functools.cache
def measured_matmul_flops(n: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of an f32 n x n x n matmul in XLA on the default device, best of `repeats` runs.

  The best run is the peak the machine reaches; medians would fold other processes' load into
  the denominator of MFU. Cached: the first call costs about a second on a 2-core CPU.
  """
  x_NxN = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  square = jax.jit(lambda a: a @ a)
  square(x_NxN).block_until_ready()
  best = math.inf
  for _ in range(repeats):
    start = time.perf_counter()
    square(x_NxN).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * n ** 3 / best


def peak_flops_per_device(device: jax.Device | None = None) -> float | None:
  """The device's peak FLOP/s: the table above, measured on the CPU, None for unknown kinds."""
  device = device or jax.devices()[0]
  if device.platform == "cpu":
    return measured_matmul_flops()
  kind = device.device_kind.lower()
  return next((peak for name, peak in PEAK_BF16_FLOPS if name in kind), None)


def mfu(tokens_per_second: float, flops_per_token: float, n_devices: int = 1,
        peak_per_device: float | None = None) -> float | None:
  """Model FLOPs utilisation of a job processing `tokens_per_second` on `n_devices` devices.

  `flops_per_token` is e.g. `training_flops_per_token(...)`; the peak defaults to
  `peak_flops_per_device()`. None when the peak is unknown.
  """
  peak = peak_per_device or peak_flops_per_device()
  if not peak:
    return None
  return tokens_per_second * flops_per_token / (n_devices * peak)
