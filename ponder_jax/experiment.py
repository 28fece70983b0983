"""The whole experiment config: defaults, validation once at start, and the resolved view.

`default_config()` is the ml-collections ConfigDict every file in configs/ starts from; its
sections are model, ponder (the typed dataclasses in config.py), data (data/pipeline.py), optim
(train/optim.py), train, checkpoint, mesh, init and metrics. `Experiment.from_config` validates
every section and resolves what the trainer needs (typed model config, vocabulary, step budget),
raising `ConfigError` that names the key. Nothing is trained or built here.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import ml_collections

from ponder_jax.config import ConfigError, ModelConfig, PonderConfig
from ponder_jax.data import pipeline
from ponder_jax.data.vocab import Vocabulary, load_vocabulary
from ponder_jax.eval import tasks as eval_tasks
from ponder_jax.sharding import MESH_AXES, logical_rules
from ponder_jax.train import init as init_lib, optim

INIT_COMPONENTS = init_lib.COMPONENTS + (init_lib.EVERYTHING,)
EMBEDDING_INITS = init_lib.EMBEDDING_INITS


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = dataclasses.asdict(ModelConfig())
  c.ponder = dataclasses.asdict(PonderConfig())
  c.data = pipeline.default_data_config()
  c.optim = optim.default_optim_config()
  c.train = dict(
      steps=1000,  # the semantic budget; data.budget decides whether warm-up phases add to it
      global_batch_size=16,
      microbatches=1,  # gradient accumulation: a lax.scan over this many slices of the batch
      seed=0,
      z_loss=0.0,
      log_every=10,
      eval_every=0,  # 0: only at the end
      eval_batches=4,
      # eval/tasks.py names run at every eval, e.g. 'math_direct,math_choice,reverse@10'
      eval_tasks="",
      eval_items=0,  # items per eval task (per length for procedural ones); 0: each task's own
  )
  c.checkpoint = dict(
      every=200,  # steps between saves (0: only at the end and on preemption)
      keep=3,  # the last N ...
      keep_period=0,  # ... plus every K-th step (0: none)
      async_save=True,
  )
  c.mesh = dict(
      ici=dict(data=-1, fsdp=1, tensor=1),  # -1 fills with the remaining devices
      dcn=dict(data=1, fsdp=1, tensor=1),  # across slices (multi-slice TPU)
      rules="fsdp",  # dp | fsdp | fsdp_tp
  )
  c.init = dict(  # train/init.py: the procedural paper's partial transfer
      from_checkpoint="",  # a trainer workdir or step dir to take components from
      # comma list of attention, mlp, norms, embeddings (token table + head), positions
      # (gpt2's learned table) or everything
      components="everything",
      embeddings="copy",  # copy (iff the embeddings component) | fresh | mean (see next)
      # rows 'mean' averages: '' = the ids the source run trained (from its stored config),
      # 'all', or ids / half-open ranges such as '9:265' or '1,2,9:265'
      embedding_rows="",
      from_hf="",  # a local Hugging Face model directory (continued pretraining)
  )
  c.metrics = dict(tensorboard=True, progress_bar=True, plot=True)
  return c


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A validated config and what is resolved from it once at start."""
  config: ml_collections.ConfigDict
  model: ModelConfig
  ponder: PonderConfig
  vocab: Vocabulary
  total_steps: int

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict,
                  model: ModelConfig | None = None,
                  vocab: Vocabulary | None = None) -> "Experiment":
    """Validates every section. `model`/`vocab` override the config's (e.g. from a HF import)."""
    model = model or ModelConfig.from_config(config.model)
    ponder = PonderConfig.from_config(config.ponder, vocab_size=model.vocab_size)
    pipeline.validate_data_config(config.data)
    vocab = vocab or load_vocabulary(config.data.vocab)
    if model.vocab_size < vocab.vocab_size:
      raise ConfigError("model.vocab_size", model.vocab_size,
                        f"is smaller than the vocabulary '{config.data.vocab}' "
                        f"({vocab.vocab_size} ids)")
    optim.validate_optim_config(config.optim)
    _validate_train(config)
    total = pipeline.total_train_steps(config.data, config.train.steps)
    return cls(config, model, ponder, vocab, total)

  def to_json(self) -> str:
    """The config as run: the model section is the resolved one (e.g. from a HF import)."""
    resolved = self.config.to_dict()
    resolved["model"] = dataclasses.asdict(self.model)
    resolved["ponder"] = dataclasses.asdict(self.ponder)
    return json.dumps(resolved, indent=2, sort_keys=True, default=str)


def _positive(section: Any, prefix: str, keys: tuple[str, ...], allow_zero=()) -> None:
  for key in keys:
    value = section[key]
    low = 0 if key in allow_zero else 1
    if not isinstance(value, int) or value < low:
      raise ConfigError(f"{prefix}.{key}", value, f"must be an integer >= {low}")


def _validate_train(c: ml_collections.ConfigDict) -> None:
  _positive(c.train, "train", ("steps", "global_batch_size", "microbatches", "log_every",
                               "eval_every", "eval_batches", "eval_items"),
            allow_zero=("eval_every", "eval_batches", "eval_items"))
  if not isinstance(c.train.eval_tasks, str):
    raise ConfigError("train.eval_tasks", c.train.eval_tasks,
                      "must be a comma list of eval task names (eval/tasks.py)")
  eval_tasks.validate_names(c.train.eval_tasks, key="train.eval_tasks")
  if c.train.global_batch_size % c.train.microbatches:
    raise ConfigError("train.microbatches", c.train.microbatches,
                      f"must divide train.global_batch_size = {c.train.global_batch_size}")
  if c.train.z_loss < 0:
    raise ConfigError("train.z_loss", c.train.z_loss, "must be >= 0")
  _positive(c.checkpoint, "checkpoint", ("every", "keep", "keep_period"),
            allow_zero=("every", "keep_period"))
  for part in ("ici", "dcn"):
    for axis, size in c.mesh[part].items():
      if axis not in MESH_AXES:
        raise ConfigError(f"mesh.{part}.{axis}", size, f"unknown mesh axis; use {MESH_AXES}")
      if not isinstance(size, int) or (size < 1 and size != -1):
        raise ConfigError(f"mesh.{part}.{axis}", size, "must be a positive integer or -1")
  logical_rules(c.mesh.rules)
  _validate_init(c)


def _validate_init(c: ml_collections.ConfigDict) -> None:
  """The init section: component names, the embeddings strategy and its rows, one source."""
  if not isinstance(c.init.components, str):
    raise ConfigError("init.components", c.init.components,
                      f"must be a comma list of {INIT_COMPONENTS}")
  init_lib.expand_components(c.init.components)
  named = [name.strip() for name in c.init.components.split(",")]
  if "positions" in named and c.model.family != "gpt2":
    raise ConfigError("init.components", c.init.components,
                      f"'positions' needs a learned position table (model.family = gpt2, "
                      f"not {c.model.family!r}); 'everything' skips it where there is none")
  if c.init.embeddings not in EMBEDDING_INITS:
    raise ConfigError("init.embeddings", c.init.embeddings, f"must be one of {EMBEDDING_INITS}")
  init_lib.parse_rows(c.init.embedding_rows)
  if c.init.embedding_rows.strip() and c.init.embeddings != "mean":
    raise ConfigError("init.embedding_rows", c.init.embedding_rows,
                      f"only init.embeddings = 'mean' averages rows (it is "
                      f"{c.init.embeddings!r}); leave it empty")
  if c.init.from_checkpoint and c.init.from_hf:
    raise ConfigError("init.from_hf", c.init.from_hf,
                      "set either init.from_checkpoint or init.from_hf, not both")
