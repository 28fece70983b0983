"""How GPT-2, GPT-NeoX (Pythia) and LLaMA checkpoints map onto this project's parameter tree.

Each `Family` turns a Hugging Face `config.json` into a `ModelConfig` (refusing variants the
model does not implement, so an import is exact or fails), and back; lists the `Plan` that
builds each of our params from Hugging Face tensors; and writes our params back as Hugging Face
tensors. Our tree (model/transformer.py) stores projections as [in..., out...] kernels with heads
split out and layers stacked on a leading axis; Hugging Face stores torch Linear weights
[out, in] (GPT-2's Conv1D: [in, out]) per layer, with q, k, v fused differently per family:
  GPT-2   c_attn [D, 3D]: columns q | k | v, each (heads, head_dim)
  NeoX    query_key_value [3D, D]: rows (heads, q|k|v, head_dim), interleaved per head
  LLaMA   separate q_proj [H*K, D], k_proj / v_proj [G*K, D]; SwiGLU gate_proj, up_proj
Reading files and placing arrays on devices live in sources.py and hf.py.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from typing import Any, Callable, Mapping

import numpy as np

from ponder_jax.config import ConfigError, ModelConfig

_REQUIRED = object()


@dataclasses.dataclass(frozen=True)
class Plan:
  """How one of our params is built from Hugging Face tensors.

  `sources` are Hugging Face names (with '{i}' for the layer index when `stacked`), each with the
  shape the config implies; `build` maps their arrays to our (per-layer) array. `row_axis` marks
  tables ([rows, D] in Hugging Face) read by row range: the axis of our array that indexes rows.
  """
  sources: tuple[tuple[str, tuple[int, ...]], ...]
  build: Callable[..., np.ndarray]
  stacked: bool = False
  row_axis: int | None = None


def _same(x: np.ndarray) -> np.ndarray:
  return x


def _transposed(x: np.ndarray) -> np.ndarray:
  return x.T


def _get(hf: Mapping[str, Any], where: str, key: str, default: Any = _REQUIRED) -> Any:
  if key in hf and hf[key] is not None:
    return hf[key]
  if default is _REQUIRED:
    raise ConfigError(f"{where}:{key}", None, "is required and missing")
  return default


def _require(hf: Mapping[str, Any], where: str, key: str, allowed: tuple, default: Any) -> Any:
  value = hf.get(key, default)
  if value is None:
    value = default
  if value not in allowed:
    raise ConfigError(f"{where}:{key}", value,
                      f"is not supported by the converter (supported: {list(allowed)})")
  return value


def _rope(hf: Mapping[str, Any], where: str, legacy_theta_key: str) -> tuple[float, float | None]:
  """(rope_theta, partial_rotary_factor or None) from transformers v5 or v4 style keys.

  Only plain RoPE is implemented: any scaling type (linear, dynamic, yarn, llama3, ...) changes
  the frequencies and is refused rather than silently converted into a different model.
  """
  params = hf.get("rope_parameters")
  if params:
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
      raise ConfigError(f"{where}:rope_parameters.rope_type", rope_type,
                        "only 'default' RoPE is supported (no scaling)")
    return float(_get(params, where, "rope_theta", 10000.0)), params.get("partial_rotary_factor")
  scaling = hf.get("rope_scaling")
  if scaling and scaling.get("rope_type", scaling.get("type", "default")) != "default":
    raise ConfigError(f"{where}:rope_scaling", scaling,
                      "only 'default' RoPE is supported (no scaling)")
  return float(hf.get(legacy_theta_key) or 10000.0), None


def _model_config(where: str, **fields) -> ModelConfig:
  """The validated ModelConfig of `fields`; an error names the Hugging Face config too. Sizes
  left at 0 (the default) and sizes given explicitly validate to the same config, so exporting a
  ModelConfig and importing it gives the same ModelConfig back."""
  try:
    return ModelConfig(**fields).validated()
  except ConfigError as e:
    raise ConfigError(f"{where} -> {e.key}", e.value, str(e)) from e


class Family(abc.ABC):
  """One Hugging Face architecture."""
  family: str  # ModelConfig.family
  model_type: str  # config.json model_type
  architecture: str  # config.json architectures[0] for export
  embed_name: str
  head_name: str
  ignored: re.Pattern | None = None  # buffers, not weights: never needed, never reported
  any_head_dim: bool = False  # config.json sets head_dim (else it is hidden size / heads)

  @abc.abstractmethod
  def model_config(self, hf: Mapping[str, Any], where: str) -> ModelConfig:
    """The ModelConfig of a Hugging Face config dict; `where` names it in errors."""

  @abc.abstractmethod
  def hf_config(self, cfg: ModelConfig) -> dict[str, Any]:
    """The architecture keys of config.json for `cfg`."""

  @abc.abstractmethod
  def layer_plans(self, cfg: ModelConfig) -> dict[str, Plan]:
    """Plans of the stacked `layers/...` params."""

  @abc.abstractmethod
  def export_layer(self, cfg: ModelConfig, layer: Mapping[str, np.ndarray],
                   i: int) -> dict[str, np.ndarray]:
    """Hugging Face tensors of layer i from our per-layer arrays (keyed like layer_plans)."""

  @abc.abstractmethod
  def top_plans(self, cfg: ModelConfig) -> dict[str, Plan]:
    """Plans of the embeddings and the final norm (not the untied head)."""

  def canonical(self, name: str) -> str:
    """The name this module uses for a checkpoint's tensor name (prefix variants differ)."""
    return name

  def plans(self, cfg: ModelConfig) -> dict[str, Plan]:
    plans = {**self.top_plans(cfg), **self.layer_plans(cfg)}
    if not cfg.tie_embeddings:
      plans["lm_head"] = Plan(((self.head_name, (cfg.vocab_size, cfg.d_model)),), _transposed,
                              row_axis=1)
    return plans

  def export(self, cfg: ModelConfig, flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All Hugging Face tensors from our params flattened to 'a/b/c' paths."""
    tensors = {}
    for plan_path, plan in self.top_plans(cfg).items():
      (name, _), = plan.sources
      tensors[name] = flat[plan_path]
    if not cfg.tie_embeddings:
      tensors[self.head_name] = flat["lm_head"].T
    layer_paths = [p for p in flat if p.startswith("layers/")]
    for i in range(cfg.n_layers):
      layer = {p: flat[p][i] for p in layer_paths}
      tensors.update(self.export_layer(cfg, layer, i))
    return {name: np.ascontiguousarray(t, dtype=np.float32) for name, t in tensors.items()}


def _layer(names: str | tuple[str, ...], build: Callable[..., np.ndarray],
           *shapes: tuple[int, ...]) -> Plan:
  """A stacked plan from one or more per-layer tensors (names with '{i}'), in `build`'s order."""
  names = (names,) if isinstance(names, str) else names
  return Plan(tuple(zip(names, shapes)), build, stacked=True)


class Gpt2(Family):
  family, model_type, architecture = "gpt2", "gpt2", "GPT2LMHeadModel"
  embed_name, head_name = "transformer.wte.weight", "lm_head.weight"
  # Causal-mask buffers that old checkpoints saved as `attn.bias` / `attn.masked_bias`.
  ignored = re.compile(r"\.attn\.(masked_)?bias$")

  def canonical(self, name: str) -> str:
    # The original OpenAI-converted checkpoints store the base model without its prefix.
    return name if name.startswith(("transformer.", "lm_head.")) else "transformer." + name

  def model_config(self, hf, where):
    _require(hf, where, "activation_function", ("gelu_new", "gelu_pytorch_tanh"), "gelu_new")
    _require(hf, where, "scale_attn_weights", (True,), True)
    _require(hf, where, "scale_attn_by_inverse_layer_idx", (False,), False)
    _require(hf, where, "add_cross_attention", (False,), False)
    return _model_config(
        where, family="gpt2", vocab_size=_get(hf, where, "vocab_size"),
        d_model=_get(hf, where, "n_embd"), n_layers=_get(hf, where, "n_layer"),
        n_heads=_get(hf, where, "n_head"),
        d_ff=_get(hf, where, "n_inner", 0),  # null means 4 * n_embd, as our 0 does
        max_len=_get(hf, where, "n_positions"),
        norm_eps=float(_get(hf, where, "layer_norm_epsilon", 1e-5)),
        tie_embeddings=bool(_get(hf, where, "tie_word_embeddings", True)),
        init_std=float(_get(hf, where, "initializer_range", 0.02)))

  def hf_config(self, cfg):
    # null n_inner is 4 * n_embd, as transformers writes it for a default-sized MLP.
    inner = None if cfg.d_ff == 4 * cfg.d_model else cfg.d_ff
    return dict(vocab_size=cfg.vocab_size, n_positions=cfg.max_len, n_embd=cfg.d_model,
                n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=inner,
                activation_function="gelu_new", layer_norm_epsilon=cfg.norm_eps,
                initializer_range=cfg.init_std, scale_attn_weights=True,
                scale_attn_by_inverse_layer_idx=False, tie_word_embeddings=cfg.tie_embeddings)

  def top_plans(self, cfg):
    v, d = cfg.vocab_size, cfg.d_model
    return {
        "token_embed": Plan(((self.embed_name, (v, d)),), _same, row_axis=0),
        "position_embed": Plan((("transformer.wpe.weight", (cfg.max_len, d)),), _same, row_axis=0),
        "final_norm/scale": Plan((("transformer.ln_f.weight", (d,)),), _same),
        "final_norm/bias": Plan((("transformer.ln_f.bias", (d,)),), _same),
    }

  def layer_plans(self, cfg):
    d, h, k, f = cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.d_ff
    t = "transformer.h.{i}."
    return {
        "layers/attention_norm/scale": _layer(t + "ln_1.weight", _same, (d,)),
        "layers/attention_norm/bias": _layer(t + "ln_1.bias", _same, (d,)),
        "layers/mlp_norm/scale": _layer(t + "ln_2.weight", _same, (d,)),
        "layers/mlp_norm/bias": _layer(t + "ln_2.bias", _same, (d,)),
        "layers/attention/query/kernel": _layer(
            t + "attn.c_attn.weight", lambda w: w[:, :d].reshape(d, h, k), (d, 3 * d)),
        "layers/attention/query/bias": _layer(
            t + "attn.c_attn.bias", lambda b: b[:d].reshape(h, k), (3 * d,)),
        "layers/attention/key_value/kernel": _layer(
            t + "attn.c_attn.weight", lambda w: w[:, d:].reshape(d, 2, h, k), (d, 3 * d)),
        "layers/attention/key_value/bias": _layer(
            t + "attn.c_attn.bias", lambda b: b[d:].reshape(2, h, k), (3 * d,)),
        "layers/attention/out/kernel": _layer(
            t + "attn.c_proj.weight", lambda w: w.reshape(h, k, d), (d, d)),
        "layers/attention/out/bias": _layer(t + "attn.c_proj.bias", _same, (d,)),
        "layers/mlp/up/kernel": _layer(t + "mlp.c_fc.weight", _same, (d, f)),
        "layers/mlp/up/bias": _layer(t + "mlp.c_fc.bias", _same, (f,)),
        "layers/mlp/down/kernel": _layer(t + "mlp.c_proj.weight", _same, (f, d)),
        "layers/mlp/down/bias": _layer(t + "mlp.c_proj.bias", _same, (d,)),
    }

  def export_layer(self, cfg, layer, i):
    d = cfg.d_model
    t = f"transformer.h.{i}."
    a = "layers/attention/"
    return {
        t + "ln_1.weight": layer["layers/attention_norm/scale"],
        t + "ln_1.bias": layer["layers/attention_norm/bias"],
        t + "ln_2.weight": layer["layers/mlp_norm/scale"],
        t + "ln_2.bias": layer["layers/mlp_norm/bias"],
        t + "attn.c_attn.weight": np.concatenate(
            [layer[a + "query/kernel"].reshape(d, d),
             layer[a + "key_value/kernel"].reshape(d, 2 * d)], axis=1),
        t + "attn.c_attn.bias": np.concatenate(
            [layer[a + "query/bias"].reshape(d), layer[a + "key_value/bias"].reshape(2 * d)]),
        t + "attn.c_proj.weight": layer[a + "out/kernel"].reshape(d, d),
        t + "attn.c_proj.bias": layer[a + "out/bias"],
        t + "mlp.c_fc.weight": layer["layers/mlp/up/kernel"],
        t + "mlp.c_fc.bias": layer["layers/mlp/up/bias"],
        t + "mlp.c_proj.weight": layer["layers/mlp/down/kernel"],
        t + "mlp.c_proj.bias": layer["layers/mlp/down/bias"],
    }


class NeoX(Family):
  family, model_type, architecture = "neox", "gpt_neox", "GPTNeoXForCausalLM"
  embed_name, head_name = "gpt_neox.embed_in.weight", "embed_out.weight"
  ignored = re.compile(r"attention\.(masked_)?bias$|rotary_emb\.inv_freq$")

  def canonical(self, name: str) -> str:
    # transformers v5 calls the untied head `lm_head`; Pythia's files call it `embed_out`.
    return "embed_out.weight" if name == "lm_head.weight" else name

  def model_config(self, hf, where):
    _require(hf, where, "use_parallel_residual", (True,), True)
    _require(hf, where, "hidden_act", ("gelu",), "gelu")
    _require(hf, where, "attention_bias", (True,), True)
    theta, partial = _rope(hf, where, "rotary_emb_base")
    d, h = _get(hf, where, "hidden_size"), _get(hf, where, "num_attention_heads")
    return _model_config(
        where, family="neox", vocab_size=_get(hf, where, "vocab_size"), d_model=d,
        n_layers=_get(hf, where, "num_hidden_layers"), n_heads=h,
        d_ff=_get(hf, where, "intermediate_size"),
        max_len=_get(hf, where, "max_position_embeddings", 2048),
        rotary_pct=float(partial if partial is not None else hf.get("rotary_pct", 0.25)),
        rope_theta=theta, norm_eps=float(_get(hf, where, "layer_norm_eps", 1e-5)),
        tie_embeddings=bool(_get(hf, where, "tie_word_embeddings", False)),
        init_std=float(_get(hf, where, "initializer_range", 0.02)))

  def hf_config(self, cfg):
    return dict(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
                num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                intermediate_size=cfg.d_ff, hidden_act="gelu",
                max_position_embeddings=cfg.max_len, layer_norm_eps=cfg.norm_eps,
                use_parallel_residual=True, attention_bias=True,
                initializer_range=cfg.init_std, tie_word_embeddings=cfg.tie_embeddings,
                # v4 reads the first two, v5 the dict; both agree.
                rotary_pct=cfg.rotary_pct, rotary_emb_base=cfg.rope_theta,
                rope_parameters=dict(rope_type="default", rope_theta=cfg.rope_theta,
                                     partial_rotary_factor=cfg.rotary_pct))

  def top_plans(self, cfg):
    v, d = cfg.vocab_size, cfg.d_model
    return {
        "token_embed": Plan(((self.embed_name, (v, d)),), _same, row_axis=0),
        "final_norm/scale": Plan((("gpt_neox.final_layer_norm.weight", (d,)),), _same),
        "final_norm/bias": Plan((("gpt_neox.final_layer_norm.bias", (d,)),), _same),
    }

  def layer_plans(self, cfg):
    d, h, k, f = cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.d_ff
    t = "gpt_neox.layers.{i}."
    qkv = t + "attention.query_key_value."
    return {
        "layers/attention_norm/scale": _layer(t + "input_layernorm.weight", _same, (d,)),
        "layers/attention_norm/bias": _layer(t + "input_layernorm.bias", _same, (d,)),
        "layers/mlp_norm/scale": _layer(t + "post_attention_layernorm.weight", _same, (d,)),
        "layers/mlp_norm/bias": _layer(t + "post_attention_layernorm.bias", _same, (d,)),
        # [3D, D] rows are (head, q|k|v, head_dim).
        "layers/attention/query/kernel": _layer(
            qkv + "weight", lambda w: w.reshape(h, 3, k, d)[:, 0].transpose(2, 0, 1),
            (3 * d, d)),
        "layers/attention/query/bias": _layer(
            qkv + "bias", lambda b: b.reshape(h, 3, k)[:, 0], (3 * d,)),
        "layers/attention/key_value/kernel": _layer(
            qkv + "weight", lambda w: w.reshape(h, 3, k, d)[:, 1:].transpose(3, 1, 0, 2),
            (3 * d, d)),
        "layers/attention/key_value/bias": _layer(
            qkv + "bias", lambda b: b.reshape(h, 3, k)[:, 1:].transpose(1, 0, 2), (3 * d,)),
        "layers/attention/out/kernel": _layer(
            t + "attention.dense.weight", lambda w: w.T.reshape(h, k, d), (d, h * k)),
        "layers/attention/out/bias": _layer(t + "attention.dense.bias", _same, (d,)),
        "layers/mlp/up/kernel": _layer(t + "mlp.dense_h_to_4h.weight", _transposed, (f, d)),
        "layers/mlp/up/bias": _layer(t + "mlp.dense_h_to_4h.bias", _same, (f,)),
        "layers/mlp/down/kernel": _layer(t + "mlp.dense_4h_to_h.weight", _transposed, (d, f)),
        "layers/mlp/down/bias": _layer(t + "mlp.dense_4h_to_h.bias", _same, (d,)),
    }

  def export_layer(self, cfg, layer, i):
    d, h, k = cfg.d_model, cfg.n_heads, cfg.head_dim
    t = f"gpt_neox.layers.{i}."
    a = "layers/attention/"
    q_HxKxD = layer[a + "query/kernel"].transpose(1, 2, 0)
    kv_Hx2xKxD = layer[a + "key_value/kernel"].transpose(2, 1, 3, 0)
    qkv_bias_Hx3xK = np.concatenate(
        [layer[a + "query/bias"][:, None], layer[a + "key_value/bias"].transpose(1, 0, 2)], axis=1)
    return {
        t + "input_layernorm.weight": layer["layers/attention_norm/scale"],
        t + "input_layernorm.bias": layer["layers/attention_norm/bias"],
        t + "post_attention_layernorm.weight": layer["layers/mlp_norm/scale"],
        t + "post_attention_layernorm.bias": layer["layers/mlp_norm/bias"],
        t + "attention.query_key_value.weight": np.concatenate(
            [q_HxKxD[:, None], kv_Hx2xKxD], axis=1).reshape(3 * d, d),
        t + "attention.query_key_value.bias": qkv_bias_Hx3xK.reshape(3 * d),
        t + "attention.dense.weight": layer[a + "out/kernel"].reshape(h * k, d).T,
        t + "attention.dense.bias": layer[a + "out/bias"],
        t + "mlp.dense_h_to_4h.weight": layer["layers/mlp/up/kernel"].T,
        t + "mlp.dense_h_to_4h.bias": layer["layers/mlp/up/bias"],
        t + "mlp.dense_4h_to_h.weight": layer["layers/mlp/down/kernel"].T,
        t + "mlp.dense_4h_to_h.bias": layer["layers/mlp/down/bias"],
    }


class Llama(Family):
  family, model_type, architecture = "llama", "llama", "LlamaForCausalLM"
  embed_name, head_name = "model.embed_tokens.weight", "lm_head.weight"
  ignored = re.compile(r"rotary_emb\.inv_freq$")
  any_head_dim = True

  def model_config(self, hf, where):
    _require(hf, where, "hidden_act", ("silu",), "silu")
    _require(hf, where, "attention_bias", (False,), False)
    _require(hf, where, "mlp_bias", (False,), False)
    theta, _ = _rope(hf, where, "rope_theta")
    d, h = _get(hf, where, "hidden_size"), _get(hf, where, "num_attention_heads")
    return _model_config(
        where, family="llama", vocab_size=_get(hf, where, "vocab_size"), d_model=d,
        n_layers=_get(hf, where, "num_hidden_layers"), n_heads=h,
        n_kv_heads=_get(hf, where, "num_key_value_heads", h),
        head_dim=_get(hf, where, "head_dim", d // h),
        d_ff=_get(hf, where, "intermediate_size"),
        max_len=_get(hf, where, "max_position_embeddings", 2048), rope_theta=theta,
        norm_eps=float(_get(hf, where, "rms_norm_eps", 1e-6)),
        tie_embeddings=bool(_get(hf, where, "tie_word_embeddings", False)),
        init_std=float(_get(hf, where, "initializer_range", 0.02)))

  def hf_config(self, cfg):
    return dict(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
                intermediate_size=cfg.d_ff, num_hidden_layers=cfg.n_layers,
                num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
                head_dim=cfg.head_dim, hidden_act="silu", max_position_embeddings=cfg.max_len,
                rms_norm_eps=cfg.norm_eps, initializer_range=cfg.init_std,
                tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, mlp_bias=False,
                rope_theta=cfg.rope_theta,
                rope_parameters=dict(rope_type="default", rope_theta=cfg.rope_theta))

  def top_plans(self, cfg):
    v, d = cfg.vocab_size, cfg.d_model
    return {
        "token_embed": Plan(((self.embed_name, (v, d)),), _same, row_axis=0),
        "final_norm/scale": Plan((("model.norm.weight", (d,)),), _same),
    }

  def layer_plans(self, cfg):
    d, h, g, k, f = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff
    t = "model.layers.{i}."
    kv_names = (t + "self_attn.k_proj.weight", t + "self_attn.v_proj.weight")
    gate_up_names = (t + "mlp.gate_proj.weight", t + "mlp.up_proj.weight")
    return {
        "layers/attention_norm/scale": _layer(t + "input_layernorm.weight", _same, (d,)),
        "layers/mlp_norm/scale": _layer(t + "post_attention_layernorm.weight", _same, (d,)),
        "layers/attention/query/kernel": _layer(
            t + "self_attn.q_proj.weight", lambda w: w.T.reshape(d, h, k), (h * k, d)),
        "layers/attention/key_value/kernel": _layer(
            kv_names, lambda wk, wv: np.stack([wk.T.reshape(d, g, k), wv.T.reshape(d, g, k)], 1),
            (g * k, d), (g * k, d)),
        "layers/attention/out/kernel": _layer(
            t + "self_attn.o_proj.weight", lambda w: w.T.reshape(h, k, d), (d, h * k)),
        "layers/mlp/gate_up/kernel": _layer(
            gate_up_names, lambda wg, wu: np.stack([wg.T, wu.T], axis=1), (f, d), (f, d)),
        "layers/mlp/down/kernel": _layer(t + "mlp.down_proj.weight", _transposed, (d, f)),
    }

  def export_layer(self, cfg, layer, i):
    d, h, g, k = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    t = f"model.layers.{i}."
    kv_Dx2xGxK = layer["layers/attention/key_value/kernel"]
    gate_up_Dx2xF = layer["layers/mlp/gate_up/kernel"]
    return {
        t + "input_layernorm.weight": layer["layers/attention_norm/scale"],
        t + "post_attention_layernorm.weight": layer["layers/mlp_norm/scale"],
        t + "self_attn.q_proj.weight": layer["layers/attention/query/kernel"].reshape(d, h * k).T,
        t + "self_attn.k_proj.weight": kv_Dx2xGxK[:, 0].reshape(d, g * k).T,
        t + "self_attn.v_proj.weight": kv_Dx2xGxK[:, 1].reshape(d, g * k).T,
        t + "self_attn.o_proj.weight": layer["layers/attention/out/kernel"].reshape(h * k, d).T,
        t + "mlp.gate_proj.weight": gate_up_Dx2xF[:, 0].T,
        t + "mlp.up_proj.weight": gate_up_Dx2xF[:, 1].T,
        t + "mlp.down_proj.weight": layer["layers/mlp/down/kernel"].T,
    }


FAMILIES: dict[str, Family] = {f.model_type: f for f in (Gpt2(), NeoX(), Llama())}
BY_FAMILY: dict[str, Family] = {f.family: f for f in FAMILIES.values()}


# A pondering export's model_type is the family's with this prefix (hf.py, modeling_ponder.py).
PONDER_MODEL_TYPE_PREFIX = "ponder_"


def family_of(hf: Mapping[str, Any], where: str) -> Family:
  """The Family of a config.json dict, by its model_type (plain or a pondering export's)."""
  model_type = hf.get("model_type")
  base = model_type
  if isinstance(model_type, str) and model_type.startswith(PONDER_MODEL_TYPE_PREFIX):
    base = model_type[len(PONDER_MODEL_TYPE_PREFIX):]
  if base not in FAMILIES:
    supported = sorted(FAMILIES) + sorted(PONDER_MODEL_TYPE_PREFIX + t for t in FAMILIES)
    raise ConfigError(f"{where}:model_type", model_type,
                      f"is not supported; supported model types are {supported}")
  return FAMILIES[base]
