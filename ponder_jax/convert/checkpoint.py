"""The converter's checkpoint layout, and reading params from it or from a trainer checkpoint.

A converter checkpoint (what `ponder-convert --from-hf` writes):
  CKPT_DIR/params/            orbax StandardCheckpointer tree of unboxed fp32 params
  CKPT_DIR/model_config.json  the ModelConfig fields
  CKPT_DIR/tokenizer/         tokenizer.json + tokenizer_config.json, when converted with one
A trainer checkpoint (train/checkpoint.py) is a workdir, its checkpoints/ dir or one step dir
`<step>/{state,config,...}`: `state` holds a 'params' entry and `config` the experiment config,
whose 'model' section is the ModelConfig.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import flax.linen as nn
import orbax.checkpoint as ocp

from ponder_jax.config import ModelConfig
from ponder_jax.convert.tokenizer import HFVocabulary, load_hf_vocabulary

PARAMS = "params"
MODEL_CONFIG = "model_config.json"
TOKENIZER = "tokenizer"


def save(ckpt_dir: str, cfg: ModelConfig, params: Any,
         vocabulary: HFVocabulary | None = None) -> None:
  """Writes the converter layout; `ckpt_dir/params` must not exist yet."""
  ckpt_dir = os.path.abspath(ckpt_dir)
  os.makedirs(ckpt_dir, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  # Boxed (LogicallyPartitioned) leaves would not restore into plain targets.
  checkpointer.save(os.path.join(ckpt_dir, PARAMS), nn.meta.unbox(params))
  checkpointer.wait_until_finished()
  with open(os.path.join(ckpt_dir, MODEL_CONFIG), "w", encoding="utf-8") as f:
    json.dump(dataclasses.asdict(cfg), f, indent=2)
  if vocabulary is not None:
    vocabulary.save(os.path.join(ckpt_dir, TOKENIZER))


def _read_model_config(path: str) -> ModelConfig:
  with open(path, encoding="utf-8") as f:
    section = json.load(f)
  return ModelConfig.from_config(section.get("model", section))


def load(path: str, *, model_config: str | None = None
         ) -> tuple[ModelConfig, dict, HFVocabulary | None]:
  """(ModelConfig, host-side params, tokenizer or None) of a converter or trainer checkpoint.

  `model_config` (a JSON file of ModelConfig fields, or of a config with a 'model' section)
  overrides the one stored with the checkpoint.
  """
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: no such checkpoint directory")
  checkpointer = ocp.StandardCheckpointer()
  if os.path.isdir(os.path.join(path, PARAMS)):
    config_file = model_config or os.path.join(path, MODEL_CONFIG)
    if not os.path.isfile(config_file):
      raise FileNotFoundError(f"{config_file}: missing; pass the model config explicitly")
    cfg = _read_model_config(config_file)
    params = checkpointer.restore(os.path.join(path, PARAMS))
    tokenizer_dir = os.path.join(path, TOKENIZER)
    vocabulary = (load_hf_vocabulary(tokenizer_dir, add_tokens=False)
                  if os.path.isdir(tokenizer_dir) else None)
    return cfg, params, vocabulary
  # pylint: disable-next=import-outside-toplevel
  from ponder_jax.train.checkpoint import load_params, resolve_checkpoint_dir
  step_dir = resolve_checkpoint_dir(path)
  if model_config:
    cfg = _read_model_config(model_config)
  else:
    config_dir = os.path.join(step_dir, "config")
    if not os.path.isdir(config_dir):
      raise FileNotFoundError(f"{config_dir}: missing; pass the model config explicitly")
    experiment = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(config_dir)
    if "model" not in experiment:
      raise ValueError(f"{config_dir}: the stored config has no 'model' section")
    cfg = ModelConfig.from_config(experiment["model"])
  return cfg, load_params(step_dir), None
