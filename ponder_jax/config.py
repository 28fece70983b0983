"""Typed, validated views of the ml-collections config.

Experiment configs are ml_collections ConfigDicts (see configs/); the model and the
pondering loop read the frozen dataclasses below, built once at start by
`ModelConfig.from_config` / `PonderConfig.from_config`, which validate every key and raise a
`ConfigError` (validation.py; importable from here too) naming the bad key and value. Nothing
here knows about training or data.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from ponder_jax.validation import ConfigError, check, from_mapping

__all__ = ["ATTENTION_IMPLS", "DTYPES", "FAMILIES", "FEATURES", "MLPS", "NORMS", "REMAT_POLICIES",
           "ConfigError", "FamilyFeatures", "ModelConfig", "PonderConfig"]

ATTENTION_IMPLS = ("auto", "einsum", "xla", "cudnn")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
PONDER_REMAT_POLICIES = ("auto", "full", "vocab")
DTYPES = ("float32", "bfloat16", "float16")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "gelu_tanh", "swiglu")


@dataclasses.dataclass(frozen=True)
class FamilyFeatures:
  """What the blocks of a model family are made of. The model, the config's validation, the
  parameter and FLOP counts (accounting.py) and the init checks read these, never the family's
  name, so a new family is one `FEATURES` entry."""
  bias: bool  # every projection has a bias
  norm: str  # NORMS: LayerNorm (scale and bias) or RMSNorm (scale only)
  mlp: str  # MLPS: GELU (erf), GELU (tanh approximation), or SwiGLU (gate and up projections)
  parallel_residual: bool  # attention and MLP both read the block's input (GPT-NeoX)
  rotary_fraction: float | None  # of each head's dims rotated by RoPE; None: model.rotary_pct
  learned_positions: bool  # a [max_len, D] position table added to the token embeddings
  grouped_query: bool  # model.n_kv_heads may be fewer than model.n_heads


FEATURES = {
    "gpt2": FamilyFeatures(bias=True, norm="layernorm", mlp="gelu_tanh", parallel_residual=False,
                           rotary_fraction=0.0, learned_positions=True, grouped_query=False),
    "neox": FamilyFeatures(bias=True, norm="layernorm", mlp="gelu", parallel_residual=True,
                           rotary_fraction=None, learned_positions=False, grouped_query=False),
    "llama": FamilyFeatures(bias=False, norm="rmsnorm", mlp="swiglu", parallel_residual=False,
                            rotary_fraction=1.0, learned_positions=False, grouped_query=True),
}
FAMILIES = tuple(FEATURES)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of the decoder. `family` fixes the block structure (`FEATURES`):

  gpt2:  learned positions, LayerNorm, GELU (tanh), biases, sequential residual.
  neox:  rotary on `rotary_pct` of each head, LayerNorm, GELU (erf), biases, parallel residual.
  llama: rotary on all head dims, RMSNorm, SwiGLU, no biases, grouped-query attention.

  `n_kv_heads`, `head_dim` and `d_ff` may be 0 in a config, for the family's default; the
  validated config (`from_config`, `validated`) holds the sizes the model has, so the model and
  every other reader take them as they are.
  """
  family: str = "neox"
  vocab_size: int = 8192
  d_model: int = 256
  n_layers: int = 4
  n_heads: int = 4
  n_kv_heads: int = 0  # 0: same as n_heads (multi-head attention)
  head_dim: int = 0  # 0: d_model // n_heads
  d_ff: int = 0  # 0: 4 * d_model (GELU); SwiGLU's 8/3 * d_model rounded up to 256
  max_len: int = 2048  # learned-position table size (gpt2); an upper bound elsewhere
  rotary_pct: float = 0.25  # where the family takes it from the config (neox); llama rotates all
  rope_theta: float = 10000.0
  norm_eps: float = 1e-5
  tie_embeddings: bool = False
  init_std: float = 0.02  # 0: PonderLM's small init sqrt(2 / (5 d))
  dtype: str = "float32"  # matmul inputs; params, norms, softmax, residual and loss stay fp32
  scan_layers: bool = False  # nn.scan over layers: flat compile time for deep models
  remat_policy: str = "none"  # per-layer rematerialisation
  attention: str = "auto"  # auto: cuDNN on GPU where it applies, einsum elsewhere

  @classmethod
  def from_config(cls, section: Mapping[str, Any] | None) -> "ModelConfig":
    return from_mapping(cls, section, "model").validated()

  @property
  def features(self) -> FamilyFeatures:
    return FEATURES[self.family]

  @property
  def rotary_dim(self) -> int:
    """Dims of each head that RoPE rotates (0: none)."""
    fraction = self.features.rotary_fraction
    return int(self.head_dim * (self.rotary_pct if fraction is None else fraction))

  def validated(self) -> "ModelConfig":
    """This config checked, with 0 sizes (n_kv_heads, head_dim, d_ff) replaced by their
    defaults; raises ConfigError naming the first bad key."""
    check(self.family in FEATURES, "model.family", self.family, f"must be one of {FAMILIES}")
    for key in ("vocab_size", "d_model", "n_layers", "n_heads", "max_len"):
      value = getattr(self, key)
      check(isinstance(value, int) and value > 0, f"model.{key}", value,
            "must be a positive integer")
    for key in ("n_kv_heads", "head_dim", "d_ff"):
      value = getattr(self, key)
      check(isinstance(value, int) and value >= 0, f"model.{key}", value,
            "must be a non-negative integer (0 means the default)")
    if not self.head_dim:
      check(self.d_model % self.n_heads == 0, "model.n_heads", self.n_heads,
            f"must divide model.d_model = {self.d_model}")
    features = self.features
    if features.mlp == "swiglu":  # 3 matrices of 2/3 * 4d: a GELU MLP's parameters (LLaMA)
      default_d_ff = 256 * math.ceil(int(8 * self.d_model / 3) / 256)
    else:
      default_d_ff = 4 * self.d_model
    cfg = dataclasses.replace(self, n_kv_heads=self.n_kv_heads or self.n_heads,
                              head_dim=self.head_dim or self.d_model // self.n_heads,
                              d_ff=self.d_ff or default_d_ff)
    check(cfg.n_heads % cfg.n_kv_heads == 0, "model.n_kv_heads", self.n_kv_heads,
          f"must divide model.n_heads = {self.n_heads}")
    grouped = [name for name, f in FEATURES.items() if f.grouped_query]
    check(features.grouped_query or cfg.n_kv_heads == cfg.n_heads, "model.n_kv_heads",
          self.n_kv_heads, f"grouped-query attention is a feature of {grouped}, not {self.family}")
    check(0.0 <= self.rotary_pct <= 1.0, "model.rotary_pct", self.rotary_pct,
          "must lie in [0, 1]")
    check(cfg.rotary_dim % 2 == 0, "model.rotary_pct", self.rotary_pct,
          f"gives an odd rotary dimension {cfg.rotary_dim} of head size {cfg.head_dim}")
    check(self.rope_theta > 0, "model.rope_theta", self.rope_theta, "must be positive")
    check(self.norm_eps > 0, "model.norm_eps", self.norm_eps, "must be positive")
    check(self.init_std >= 0, "model.init_std", self.init_std, "must be >= 0")
    check(self.dtype in DTYPES, "model.dtype", self.dtype, f"must be one of {DTYPES}")
    check(self.remat_policy in REMAT_POLICIES, "model.remat_policy", self.remat_policy,
          f"must be one of {REMAT_POLICIES}")
    check(self.attention in ATTENTION_IMPLS, "model.attention", self.attention,
          f"must be one of {ATTENTION_IMPLS}")
    return cfg


@dataclasses.dataclass(frozen=True)
class PonderConfig:
  """PonderLM's pondering loop (METHODS.md §1). steps = 0 is the vanilla model."""
  steps: int = 0  # s: extra soft-embedding passes per forward
  steps_max: int = 0  # > 0: draw s uniformly from {steps, ..., steps_max} per batch
  scale_embeds: bool = False  # E0 and the mixture table scaled by sqrt(d_model)
  multiply_initial: bool = False  # start the loop from s * E0
  top_k: int = 0  # 0: mixture over the full vocabulary; k: renormalised over the top k
  depth_scaled_init: bool = True  # output projections' std / sqrt(2 * layers * (s + 1))
  # Passes (s + 1) the depth-scaled init assumes; 0: this model's own max_passes. A sweep over
  # s sets it so that its arms share one init and differ only in s.
  init_passes: int = 0
  remat: bool = True  # rematerialise each pass: activations of one pass, not s + 1
  # What a rematerialised pass recomputes in the backward: 'full' its whole forward (one pass's
  # activations live); 'vocab' only the [B, L, V] head and softmax of its mixture (the layers'
  # activations are kept, the vocabulary-sized arrays never are); 'auto': 'full', with the
  # mixture over 1024-row blocks on the CPU (model/ponder.py::remat_policy says why).
  # vocab_chunk > 0: the mixture over blocks of that many rows (no [B, L, V] buffers).
  remat_policy: str = "auto"
  vocab_chunk: int = 0

  @classmethod
  def from_config(cls, section: Mapping[str, Any] | None,
                  vocab_size: int | None = None) -> "PonderConfig":
    return from_mapping(cls, section, "ponder").validated(vocab_size)

  @property
  def max_passes(self) -> int:
    """The largest number of forward passes (s + 1) a batch can run."""
    return max(self.steps, self.steps_max) + 1

  @property
  def init_depth_passes(self) -> int:
    """The passes the output projections' init is scaled for (Transformer's ponder_passes):
    std / sqrt(2 * layers * this). 1 without depth-scaled init."""
    if not self.depth_scaled_init:
      return 1
    return self.init_passes or self.max_passes

  def validated(self, vocab_size: int | None = None) -> "PonderConfig":
    check(isinstance(self.steps, int) and self.steps >= 0, "ponder.steps", self.steps,
          "must be an integer >= 0 (0 is the vanilla model)")
    check(isinstance(self.steps_max, int) and (self.steps_max == 0 or self.steps_max >= self.steps),
          "ponder.steps_max", self.steps_max,
          f"must be 0 (fixed s) or >= ponder.steps = {self.steps}")
    check(isinstance(self.init_passes, int) and not isinstance(self.init_passes, bool)
          and self.init_passes >= 0, "ponder.init_passes", self.init_passes,
          "must be an integer >= 0 (0: this model's own s + 1)")
    check(self.remat_policy in PONDER_REMAT_POLICIES, "ponder.remat_policy", self.remat_policy,
          f"must be one of {PONDER_REMAT_POLICIES}")
    check(isinstance(self.vocab_chunk, int) and not isinstance(self.vocab_chunk, bool)
          and self.vocab_chunk >= 0, "ponder.vocab_chunk", self.vocab_chunk,
          "must be an integer >= 0 (0: all rows at once)")
    check(isinstance(self.top_k, int) and self.top_k >= 0, "ponder.top_k", self.top_k,
          "must be an integer >= 0 (0 is the full vocabulary)")
    if vocab_size is not None:
      check(self.top_k <= vocab_size, "ponder.top_k", self.top_k,
            f"exceeds model.vocab_size = {vocab_size}")
    return self
