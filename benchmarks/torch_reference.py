"""The PyTorch baseline of benchmarks/train_step.py: Hugging Face GPT-NeoX with PonderLM's loop.

The ponder loop is written around `transformers.GPTNeoXForCausalLM` the way the official PonderLM
code does it (LUMIA-Group/PonderingLM, `modeling_gpt_neox.py`): every pass is a full forward over
`inputs_embeds`, the softmax of its logits mixes the *input* embedding table, the mixture is added
to the running input, and only the last pass's logits reach the loss. No rematerialisation, as
there.
The optimizer is AdamW with the same hyperparameters as the JAX step. This module is a benchmark
baseline only: nothing in ponder_jax imports it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from ponder_jax.config import ModelConfig


def neox_config(cfg: ModelConfig, attn_implementation: str = "sdpa") -> GPTNeoXConfig:
  """The Hugging Face config of the same GPT-NeoX (Pythia) model; dropout off."""
  assert cfg.family == "neox", "the PyTorch baseline is GPT-NeoX only"
  config = GPTNeoXConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
      num_attention_heads=cfg.n_heads, intermediate_size=cfg.d_ff, hidden_act="gelu",
      max_position_embeddings=cfg.max_len, layer_norm_eps=cfg.norm_eps,
      initializer_range=cfg.init_std or 0.02, tie_word_embeddings=cfg.tie_embeddings,
      use_parallel_residual=True, attention_dropout=0.0, hidden_dropout=0.0,
      rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta,
                       "partial_rotary_factor": cfg.rotary_pct},
      use_cache=False)
  config._attn_implementation = attn_implementation
  return config


def ponder_logits(model: GPTNeoXForCausalLM, tokens_BxL: torch.Tensor, steps: int) -> torch.Tensor:
  """Logits of the last of s + 1 passes (METHODS.md §1.1), as the official code computes them."""
  embed = model.get_input_embeddings()
  cur_BxLxD = embed(tokens_BxL)
  for _ in range(steps):
    logits_BxLxV = model(inputs_embeds=cur_BxLxD, use_cache=False).logits
    cur_BxLxD = cur_BxLxD + torch.softmax(logits_BxLxV, dim=-1) @ embed.weight
  return model(inputs_embeds=cur_BxLxD, use_cache=False).logits


class TorchPonderTrainer:
  """One GPT-NeoX model and its AdamW; `step` is forward + backward + update on one batch."""

  def __init__(self, cfg: ModelConfig, *, learning_rate: float, b1: float, b2: float,
               weight_decay: float, threads: int = 2, attn_implementation: str = "sdpa",
               seed: int = 0):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    self.model = GPTNeoXForCausalLM(neox_config(cfg, attn_implementation)).train()
    # foreach: the multi-tensor AdamW, the fastest of PyTorch's three on this CPU.
    self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=learning_rate, betas=(b1, b2),
                                       weight_decay=weight_decay, eps=1e-8, foreach=True)

  def step(self, tokens_BxL: torch.Tensor, steps: int) -> float:
    logits_BxLxV = ponder_logits(self.model, tokens_BxL, steps)
    vocab = logits_BxLxV.shape[-1]
    loss = F.cross_entropy(logits_BxLxV[:, :-1].reshape(-1, vocab).float(),
                           tokens_BxL[:, 1:].reshape(-1))
    loss.backward()
    self.optimizer.step()
    self.optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())
