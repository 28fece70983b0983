"""The converter's checkpoint layout, and reading params from it or from a trainer checkpoint.

A converter checkpoint (what `ponder-convert --from-hf` writes):
  CKPT_DIR/params/             orbax StandardCheckpointer tree of unboxed fp32 params
  CKPT_DIR/model_config.json   the ModelConfig fields
  CKPT_DIR/ponder_config.json  the PonderConfig fields, when the model ponders
  CKPT_DIR/tokenizer/          tokenizer.json + tokenizer_config.json, when converted with one
A trainer checkpoint (train/checkpoint.py) is a workdir, its checkpoints/ dir or one step dir
`<step>/{state,config,...}`: `state` holds a 'params' entry and `config` the experiment config,
whose 'model' and 'ponder' sections are the ModelConfig and PonderConfig, and whose vocabulary
is `data.vocab` (or, for a run started with `init.from_hf`, that directory's tokenizer with the
reserved tokens the trainer added), so a trainer checkpoint exports with its own tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import orbax.checkpoint as ocp

from ponder_jax.config import ConfigError, ModelConfig, PonderConfig
from ponder_jax.data import vocab as vocab_lib
from ponder_jax.data.vocab import HFVocabulary, Vocabulary, load_hf_vocabulary
from ponder_jax.train.checkpoint import load_params, resolve_checkpoint_dir

PARAMS = "params"
MODEL_CONFIG = "model_config.json"
PONDER_CONFIG = "ponder_config.json"
TOKENIZER = "tokenizer"


class Loaded(NamedTuple):
  """A checkpoint's model, as `load` reads it."""
  cfg: ModelConfig
  params: Any  # host-side
  vocabulary: Vocabulary | None  # None: none stored, or not asked for
  ponder: PonderConfig  # how the params compute; PonderConfig() for a plain model


def save(ckpt_dir: str, cfg: ModelConfig, params: Any,
         vocabulary: HFVocabulary | None = None, ponder: PonderConfig | None = None) -> None:
  """Writes the converter layout; `ckpt_dir/params` must not exist yet."""
  ckpt_dir = os.path.abspath(ckpt_dir)
  os.makedirs(ckpt_dir, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  # Boxed (LogicallyPartitioned) leaves would not restore into plain targets.
  checkpointer.save(os.path.join(ckpt_dir, PARAMS), nn.meta.unbox(params))
  checkpointer.wait_until_finished()
  with open(os.path.join(ckpt_dir, MODEL_CONFIG), "w", encoding="utf-8") as f:
    json.dump(dataclasses.asdict(cfg), f, indent=2)
  if ponder is not None and ponder != PonderConfig():
    with open(os.path.join(ckpt_dir, PONDER_CONFIG), "w", encoding="utf-8") as f:
      json.dump(dataclasses.asdict(ponder), f, indent=2)
  if vocabulary is not None:
    vocabulary.save(os.path.join(ckpt_dir, TOKENIZER))


def _read_json(path: str) -> dict[str, Any]:
  with open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except ValueError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from e


def _model_config(section: Mapping[str, Any], where: str) -> ModelConfig:
  try:
    return ModelConfig.from_config(section.get("model", section))
  except ConfigError as e:
    raise ConfigError(f"{where} -> {e.key}", e.value, str(e)) from e


def _ponder_config(section: Mapping[str, Any], where: str) -> PonderConfig:
  try:
    return PonderConfig.from_config(section)
  except ConfigError as e:
    raise ConfigError(f"{where} -> {e.key}", e.value, str(e)) from e


def run_vocabulary(experiment: Mapping[str, Any], where: str) -> Vocabulary | None:
  """The vocabulary a trainer run used, from its stored experiment config.

  The trainer's own (data/vocab.py's `run_vocabulary`): with `init.from_hf` the tokenizer of
  that directory plus the reserved tokens (and the procedural symbols when a procedural source
  is configured), else `data.vocab`.
  """
  data, init = experiment.get("data", {}), experiment.get("init", {})
  if not init.get("from_hf") and "vocab" not in data:
    return None  # a config without a data section names no vocabulary
  try:
    return vocab_lib.run_vocabulary(data, init)
  except (ConfigError, FileNotFoundError, ValueError) as e:
    raise ValueError(f"{where}: the run's vocabulary cannot be loaded ({e}); pass --tokenizer "
                     "DIR for another one or --no-tokenizer to export without") from e


def load(path: str, *, model_config: str | None = None, vocabulary: bool = True) -> Loaded:
  """The model config, host-side params, tokenizer and ponder settings of a converter or
  trainer checkpoint.

  `model_config` (a JSON file of ModelConfig fields, or of a config with a 'model' and
  optionally a 'ponder' section) overrides the one stored with the checkpoint. With
  `vocabulary=False` no tokenizer is read.
  """
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: no such checkpoint directory")
  override = _read_json(model_config) if model_config else None
  checkpointer = ocp.StandardCheckpointer()
  if os.path.isdir(os.path.join(path, PARAMS)):
    config_file = model_config or os.path.join(path, MODEL_CONFIG)
    if not os.path.isfile(config_file):
      raise FileNotFoundError(f"{config_file}: missing; pass the model config explicitly")
    cfg = _model_config(_read_json(config_file), config_file)
    ponder_file = os.path.join(path, PONDER_CONFIG)
    if override is not None and "ponder" in override:
      ponder = _ponder_config(override["ponder"], model_config)
    elif os.path.isfile(ponder_file):
      ponder = _ponder_config(_read_json(ponder_file), ponder_file)
    else:
      ponder = PonderConfig()
    params = checkpointer.restore(os.path.join(path, PARAMS))
    tokenizer_dir = os.path.join(path, TOKENIZER)
    vocab = (load_hf_vocabulary(tokenizer_dir, add_tokens=False)
             if vocabulary and os.path.isdir(tokenizer_dir) else None)
    return Loaded(cfg, params, vocab, ponder)
  step_dir = resolve_checkpoint_dir(path)
  config_dir = os.path.join(step_dir, "config")
  experiment = None
  if os.path.isdir(config_dir):
    experiment = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(config_dir)
  elif not model_config:
    raise FileNotFoundError(f"{config_dir}: missing; pass the model config explicitly")
  if override is not None:
    cfg = _model_config(override, model_config)
  elif "model" not in experiment:
    raise ValueError(f"{config_dir}: the stored config has no 'model' section")
  else:
    cfg = _model_config(experiment["model"], config_dir)
  if override is not None and "ponder" in override:
    ponder = _ponder_config(override["ponder"], model_config)
  else:
    ponder = _ponder_config((experiment or {}).get("ponder", {}), config_dir)
  vocab = run_vocabulary(experiment, config_dir) if vocabulary and experiment else None
  return Loaded(cfg, load_params(step_dir), vocab, ponder)
