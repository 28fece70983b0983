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
  features = cfg.features
  bias = features.bias
  norm = 2 * d if features.norm == "layernorm" else d  # LayerNorm: scale and bias
  attention = d * h * k + d * 2 * g * k + h * k * d + bias * (h * k + 2 * g * k + d)
  if features.mlp == "swiglu":
    mlp = 3 * d * f + bias * (2 * f + d)
  else:
    mlp = 2 * d * f + bias * (f + d)
  per_layer = attention + mlp + 2 * norm
  embeddings = v * d * (1 if cfg.tie_embeddings else 2)
  positions = cfg.max_len * d if features.learned_positions else 0
  return cfg.n_layers * per_layer + norm + embeddings + positions


def pass_flops_per_token(cfg: ModelConfig, seq_len: int,
                          attention_share: float = 0.5) -> tuple[float, float, float]:
  """Forward matmul FLOPs per token of one pass: (layers, LM head, mixture P @ E_in).
  `attention_share` of the L x L scores is counted: 0.5 for causal model FLOPs."""
  d, h, g, k, f, v = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff,
                      cfg.vocab_size)
  projections = 2 * d * (h * k + 2 * g * k) + 2 * h * k * d
  attention = attention_share * (2 * 2 * seq_len * h * k)
  mlp = 2 * d * f * (3 if cfg.features.mlp == "swiglu" else 2)
  return cfg.n_layers * (projections + attention + mlp), 2 * d * v, 2 * v * d


def forward_flops_per_token(cfg: ModelConfig, seq_len: int, ponder_steps: int = 0) -> float:
  """Matmul FLOPs of one forward per token, pondering included (see module docstring)."""
  layers, head, mixture = pass_flops_per_token(cfg, seq_len)
  return (ponder_steps + 1) * (layers + head) + ponder_steps * mixture


def training_flops_per_token(cfg: ModelConfig, seq_len: int, ponder_steps: int = 0) -> float:
  return 3.0 * forward_flops_per_token(cfg, seq_len, ponder_steps)


def executed_training_flops_per_token(cfg: ModelConfig, seq_len: int, ponder_steps: int = 0, *,
                                      ponder_remat: bool = True,
                                      full_attention: bool = True) -> float:
  """Matmul FLOPs per token that the compiled train step executes, not only the model's: what
  rematerialisation recomputes is added, and with `full_attention` (the einsum and XLA kernels)
  the masked half of the causal L x L scores too. MFU's numerator stays
  `training_flops_per_token`; this one says how long the step takes at a given FLOP rate.

  Per pass the backward recomputes the layers' forward once under `model.remat_policy` 'full'
  (none under 'dots', the attention scores under 'dots_no_batch'), and with `ponder_remat`
  each of the s pondering passes is run forward once more (layers, head and mixture) before
  its backward."""
  share = 1.0 if full_attention else 0.5
  layers, head, mixture = pass_flops_per_token(cfg, seq_len, share)
  s = ponder_steps
  total = 3.0 * ((s + 1) * (layers + head) + s * mixture)
  if cfg.remat_policy == "full":
    total += (s + 1) * layers
  elif cfg.remat_policy == "dots_no_batch":
    total += (s + 1) * cfg.n_layers * share * 2 * 2 * seq_len * cfg.n_heads * cfg.head_dim
  if ponder_remat:
    total += s * (layers + head + mixture)
  return total


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

# HBM capacity (bytes) and bandwidth (bytes/s) per TPU chip, matched like PEAK_BF16_FLOPS. Source:
# the Cloud TPU system-architecture pages (cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e; read
# 2026-12): v4 32 GiB at 1,200 GB/s, v5e 16 GB at 819 GB/s, v5p 95 GB at 2,765 GB/s, v6e
# (Trillium) 32 GB at 1,640 GB/s. The chips carry binary gigabytes (16 GiB on a v5e), of which
# the runtime keeps a few hundred MiB: a step within ~3% of the figure is at the edge.
HBM_BYTES: tuple[tuple[str, int], ...] = (
    ("tpu v6 lite", 32 * 2**30),
    ("tpu v6e", 32 * 2**30),
    ("tpu v5 lite", 16 * 2**30),
    ("tpu v5e", 16 * 2**30),
    ("tpu v5p", 95 * 2**30),
    ("tpu v5", 95 * 2**30),
    ("tpu v4", 32 * 2**30),
)
HBM_BYTES_PER_SECOND: tuple[tuple[str, float], ...] = (
    ("tpu v6 lite", 1640e9),
    ("tpu v6e", 1640e9),
    ("tpu v5 lite", 819e9),
    ("tpu v5e", 819e9),
    ("tpu v5p", 2765e9),
    ("tpu v5", 2765e9),
    ("tpu v4", 1200e9),
)


def device_spec(table: tuple[tuple[str, float], ...], device_kind: str) -> float | None:
  """The first entry of `table` whose name is in `device_kind` (e.g. 'TPU v5 lite'), or None."""
  kind = device_kind.lower()
  return next((value for name, value in table if name in kind), None)


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
  return device_spec(PEAK_BF16_FLOPS, device.device_kind)


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
