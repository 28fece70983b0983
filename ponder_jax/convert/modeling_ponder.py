"""PonderLM (pondering in continuous space) on top of transformers' own GPT-2, GPT-NeoX and LLaMA.

Written by ponder-jax's `ponder-convert --to-hf` next to the weights of a model trained to
ponder, and registered in its config.json through `auto_map`, so that

    AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)

computes what was trained (ponder-jax's `ponder_jax/model/ponder.py`), not a plain backbone:

    E0  = embed(ids) * (sqrt(d_model) if ponder_scale_embeds else 1)
    cur = s * E0 if ponder_multiply_initial else E0            (s = ponder_steps)
    repeat s times:  P = softmax(logits(cur))                   (over the top ponder_top_k logits,
                     cur = cur + P @ (E_in * scale)              renormalised, when > 0)
    return logits(cur)

Every pass is a full causal forward of the family's own backbone on `inputs_embeds` with the same
weights (GPT-2 adds its learned positions inside the backbone, in every pass). The model type is
`ponder_<family>`, so loading without trust_remote_code fails instead of silently giving the
plain backbone. Passing `ponder_steps=N` to `from_pretrained` runs N passes instead of the
trained default.

Generation recomputes the whole sequence at every step, as PonderLM's own code does: a key/value
cache of one pass would be wrong for the next, so `use_cache` is always off.

Self-contained: imports torch and transformers only.
"""

import math

import torch
from transformers import (GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM,
                          LlamaConfig, LlamaForCausalLM)
from transformers.modeling_outputs import CausalLMOutputWithPast

# config.json keys of the pondering loop and their defaults (the plain model).
PONDER_DEFAULTS = {
    "ponder_steps": 0,
    "ponder_scale_embeds": False,
    "ponder_multiply_initial": False,
    "ponder_top_k": 0,
}
# Inputs of a key/value cache or of logit slicing: meaningless when every pass recomputes all
# positions, so they are dropped rather than passed to the backbone.
_CACHE_INPUTS = ("past_key_values", "cache", "cache_position", "logits_to_keep",
                 "num_logits_to_keep", "next_sequence_length", "is_first_iteration")


def ponder_settings(config) -> dict:
  """The ponder_* settings of `config`, checked: a bad value is named, not misread."""
  settings = {key: getattr(config, key, default) for key, default in PONDER_DEFAULTS.items()}
  for key in ("ponder_steps", "ponder_top_k"):
    value = settings[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise ValueError(f"config.json: {key} = {value!r} must be an integer >= 0")
  for key in ("ponder_scale_embeds", "ponder_multiply_initial"):
    if not isinstance(settings[key], bool):
      raise ValueError(f"config.json: {key} = {settings[key]!r} must be true or false")
  if settings["ponder_top_k"] > config.vocab_size:
    raise ValueError(f"config.json: ponder_top_k = {settings['ponder_top_k']} exceeds "
                     f"vocab_size = {config.vocab_size}")
  return settings


def mixture_probs(logits, top_k: int):
  """softmax over the vocabulary, or over the logits >= the k-th largest (renormalised)."""
  logits = logits.float()
  if top_k:
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    logits = logits.masked_fill(logits < kth, float("-inf"))
  return torch.softmax(logits, dim=-1)


class _Ponder:
  """The pondering forward and full-recompute generation, mixed into a family's causal LM."""

  def _one_pass(self, cur, attention_mask, position_ids, kwargs):
    hidden = self.base_model(inputs_embeds=cur, attention_mask=attention_mask,
                             position_ids=position_ids, use_cache=False,
                             **kwargs).last_hidden_state
    return self.get_output_embeddings()(hidden)

  def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
              labels=None, use_cache=None, return_dict=None, **kwargs):
    """Logits of the last of s + 1 passes (METHODS.md §1.1); `inputs_embeds` stands for E0."""
    del use_cache, return_dict  # no cache: every pass sees every position
    for key in _CACHE_INPUTS:
      kwargs.pop(key, None)
    token_type_ids = kwargs.pop("token_type_ids", None)
    if token_type_ids is not None and bool(token_type_ids.any()):
      raise ValueError("token_type_ids: the pondering model was trained without them")
    settings = ponder_settings(self.config)
    ponder_steps = settings["ponder_steps"]
    table = self.get_input_embeddings().weight
    e0 = table[input_ids] if inputs_embeds is None else inputs_embeds
    if ponder_steps == 0 and not settings["ponder_scale_embeds"]:
      cur = e0
    else:
      scale = math.sqrt(self.config.hidden_size) if settings["ponder_scale_embeds"] else 1.0
      e0 = e0 * scale
      cur = max(ponder_steps, 1) * e0 if settings["ponder_multiply_initial"] else e0
      for _ in range(ponder_steps):
        probs = mixture_probs(self._one_pass(cur, attention_mask, position_ids, kwargs),
                              settings["ponder_top_k"])
        cur = cur + torch.matmul(probs.to(table.dtype), table * scale)
    logits = self._one_pass(cur, attention_mask, position_ids, kwargs)
    loss = None
    if labels is not None:
      loss = self.loss_function(logits=logits, labels=labels,
                                vocab_size=self.config.vocab_size)
    return CausalLMOutputWithPast(loss=loss, logits=logits)

  def prepare_inputs_for_generation(self, input_ids, attention_mask=None, inputs_embeds=None,
                                    **kwargs):
    """The whole sequence at every step; positions from the mask so left padding works."""
    del kwargs  # cache bookkeeping: nothing is cached
    if inputs_embeds is not None:
      raise ValueError("inputs_embeds: pondering generation needs input_ids")
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    if attention_mask is not None:
      position_ids = attention_mask.long().cumsum(-1) - 1
      inputs["position_ids"] = position_ids.masked_fill(attention_mask == 0, 1)
    return inputs

  def generate(self, *args, **kwargs):
    """transformers' generate with `use_cache=False` enforced (see the module docstring)."""
    kwargs["use_cache"] = False
    return super().generate(*args, **kwargs)


class PonderGPT2Config(GPT2Config):
  model_type = "ponder_gpt2"


class PonderGPTNeoXConfig(GPTNeoXConfig):
  model_type = "ponder_gpt_neox"


class PonderLlamaConfig(LlamaConfig):
  model_type = "ponder_llama"


class PonderGPT2LMHeadModel(_Ponder, GPT2LMHeadModel):
  config_class = PonderGPT2Config


class PonderGPTNeoXForCausalLM(_Ponder, GPTNeoXForCausalLM):
  config_class = PonderGPTNeoXConfig


class PonderLlamaForCausalLM(_Ponder, LlamaForCausalLM):
  config_class = PonderLlamaConfig


def _register_neox_head_name():
  """Pythia files name the NeoX head `embed_out`; transformers 5 calls it `lm_head` and renames
  it on load for its own class only, so this class registers the same renaming (older
  transformers call the attribute `embed_out` and need none)."""
  try:
    from transformers.conversion_mapping import register_checkpoint_conversion_mapping
    from transformers.core_model_loading import WeightRenaming
  except ImportError:
    return
  register_checkpoint_conversion_mapping(
      PonderGPTNeoXForCausalLM.__name__,
      [WeightRenaming(source_patterns=r"^embed_out\.", target_patterns="lm_head.")],
      overwrite=True)


_register_neox_head_name()
