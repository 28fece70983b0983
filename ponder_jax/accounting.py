"""Parameter counts and analytic training FLOPs per token.

FLOP convention (as MaxText's `calculate_tflops_training_per_device`):
  * matmuls only, 2 * m * n * k each; norms, softmax, embedding gathers and the optimizer are
    not counted;
  * causal attention is halved: QK^T and AV cost 2 * 2 * L * heads * head_dim per token, times 1/2;
  * a pondering forward is s + 1 full passes (layers and LM head) plus s mixtures P @ E_in of
    2 * V * d each;
  * training = 3 x forward (the backward costs two forwards); rematerialisation is not counted:
    these are model FLOPs, the numerator of MFU.
"""

from __future__ import annotations

import math

import jax

from ponder_jax.config import ModelConfig


def count_params(params) -> int:
  """Number of scalars in a parameter tree (boxed or not)."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


def analytic_param_count(cfg: ModelConfig) -> int:
  """The parameter count `Transformer(cfg).init` produces, without building it."""
  d, h, g, k, f, v = (cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.head_size, cfg.ff_size,
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
  d, h, g, k, f, v = (cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.head_size, cfg.ff_size,
                      cfg.vocab_size)
  projections = 2 * d * (h * k + 2 * g * k) + 2 * h * k * d
  attention = 0.5 * (2 * 2 * seq_len * h * k)
  mlp = 2 * d * f * (3 if cfg.family == "llama" else 2)
  one_pass = cfg.n_layers * (projections + attention + mlp) + 2 * d * v
  mixture = 2 * v * d
  return (ponder_steps + 1) * one_pass + ponder_steps * mixture


def training_flops_per_token(cfg: ModelConfig, seq_len: int, ponder_steps: int = 0) -> float:
  return 3.0 * forward_flops_per_token(cfg, seq_len, ponder_steps)
