"""The whole experiment config: defaults, validation once at start, and the resolved view.

`default_config()` is the ml-collections ConfigDict every file in configs/ starts from. Each
section has a frozen dataclass beside the code that reads it, filled and validated once by
`Experiment.from_config`, raising `ConfigError` that names the key:

  model, ponder   ModelConfig, PonderConfig      config.py
  data            DataSpec                       data/spec.py
  optim           OptimConfig                    train/optim.py
  train           TrainConfig                    here
  checkpoint      CheckpointConfig               train/checkpoint.py
  mesh            MeshConfig                     sharding.py
  metrics         MetricsConfig                  train/metrics.py
  init            (checked here; a mapping)      train/init.py

The Experiment also resolves the vocabulary and the step budget. Modules read these views, never
the raw ConfigDict. Nothing is trained or built here.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

import ml_collections

from ponder_jax.config import FEATURES, ConfigError, ModelConfig, PonderConfig
from ponder_jax.data.spec import DataSpec, default_data_config, total_train_steps
from ponder_jax.data.vocab import Vocabulary, load_vocabulary
from ponder_jax.eval import tasks as eval_tasks
from ponder_jax.sharding import MeshConfig
from ponder_jax.train import init as init_lib, optim
from ponder_jax.train.checkpoint import CheckpointConfig
from ponder_jax.train.metrics import MetricsConfig
from ponder_jax.train.optim import OptimConfig
from ponder_jax.validation import check, check_int, from_mapping

INIT_COMPONENTS = init_lib.COMPONENTS + (init_lib.EVERYTHING,)
EMBEDDING_INITS = init_lib.EMBEDDING_INITS


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = dataclasses.asdict(ModelConfig())
  c.ponder = dataclasses.asdict(PonderConfig())
  c.data = default_data_config()
  c.optim = optim.default_optim_config()
  c.train = dataclasses.asdict(TrainConfig())
  c.checkpoint = dataclasses.asdict(CheckpointConfig())
  c.mesh = dataclasses.asdict(MeshConfig())
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
  c.metrics = dataclasses.asdict(MetricsConfig())
  return c


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """A validated `train` section (`TrainConfig.from_config`)."""
  steps: int = 1000  # the semantic budget; data.budget decides whether warm-up phases add to it
  global_batch_size: int = 16
  microbatches: int = 1  # gradient accumulation: a lax.scan over this many slices of the batch
  seed: int = 0
  z_loss: float = 0.0
  log_every: int = 10
  eval_every: int = 0  # 0: only at the end
  eval_batches: int = 4
  # eval/tasks.py names run at every eval, e.g. 'math_direct,math_choice,reverse@10'
  eval_tasks: str = ""
  eval_items: int = 0  # items per eval task (per length for procedural ones); 0: each task's own

  @classmethod
  def from_config(cls, section: Mapping[str, Any]) -> "TrainConfig":
    cfg = from_mapping(cls, section, "train")
    for key in ("steps", "global_batch_size", "microbatches", "log_every"):
      check_int(getattr(cfg, key), f"train.{key}", 1)
    for key in ("eval_every", "eval_batches", "eval_items"):
      check_int(getattr(cfg, key), f"train.{key}", 0)
    check(isinstance(cfg.eval_tasks, str), "train.eval_tasks", cfg.eval_tasks,
          "must be a comma list of eval task names (eval/tasks.py)")
    eval_tasks.validate_names(cfg.eval_tasks, key="train.eval_tasks")
    check(cfg.global_batch_size % cfg.microbatches == 0, "train.microbatches", cfg.microbatches,
          f"must divide train.global_batch_size = {cfg.global_batch_size}")
    check(cfg.z_loss >= 0, "train.z_loss", cfg.z_loss, "must be >= 0")
    return cfg


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A validated config: every section a module reads as a typed view, validated once here
  (levanter's TrainLmConfig, kept small), and what is resolved from them at start. The `init`
  section stays a mapping: train/init.py reads it, and the stored configs of other runs, alike."""
  config: ml_collections.ConfigDict  # as given; `to_json` writes it with model/ponder resolved
  model: ModelConfig
  ponder: PonderConfig
  data: DataSpec
  train: TrainConfig
  optim: OptimConfig
  checkpoint: CheckpointConfig
  mesh: MeshConfig
  metrics: MetricsConfig
  vocab: Vocabulary
  total_steps: int  # train steps the run takes: train.steps with data.budget applied

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict,
                  model: ModelConfig | None = None,
                  vocab: Vocabulary | None = None) -> "Experiment":
    """Validates every section. `model`/`vocab` override the config's (e.g. from a HF import)."""
    model = model or ModelConfig.from_config(config.model)
    ponder = PonderConfig.from_config(config.ponder, vocab_size=model.vocab_size)
    data = DataSpec.from_config(config.data)
    vocab = vocab or load_vocabulary(data.vocab)
    if model.vocab_size < vocab.vocab_size:
      raise ConfigError("model.vocab_size", model.vocab_size,
                        f"is smaller than the vocabulary '{data.vocab}' "
                        f"({vocab.vocab_size} ids)")
    optim_cfg = OptimConfig.from_config(config.optim)
    train = TrainConfig.from_config(config.train)
    checkpoint = CheckpointConfig.from_config(config.checkpoint)
    mesh = MeshConfig.from_config(config.mesh)
    metrics = MetricsConfig.from_config(config.metrics)
    _validate_init(config.init, model)
    total = total_train_steps(data, train.steps)
    return cls(config, model, ponder, data, train, optim_cfg, checkpoint, mesh, metrics, vocab,
               total)

  def to_json(self) -> str:
    """The config as run: the model section is the resolved one (e.g. from a HF import)."""
    resolved = self.config.to_dict()
    resolved["model"] = dataclasses.asdict(self.model)
    resolved["ponder"] = dataclasses.asdict(self.ponder)
    return json.dumps(resolved, indent=2, sort_keys=True, default=str)


def _validate_init(init: ml_collections.ConfigDict, model: ModelConfig) -> None:
  """The init section: component names, the embeddings strategy and its rows, one source."""
  if not isinstance(init.components, str):
    raise ConfigError("init.components", init.components,
                      f"must be a comma list of {INIT_COMPONENTS}")
  init_lib.expand_components(init.components)
  named = [name.strip() for name in init.components.split(",")]
  if "positions" in named and not model.features.learned_positions:
    learned = [name for name, f in FEATURES.items() if f.learned_positions]
    raise ConfigError("init.components", init.components,
                      f"'positions' needs a learned position table (model.family in {learned}, "
                      f"not {model.family!r}); 'everything' skips it where there is none")
  if init.embeddings not in EMBEDDING_INITS:
    raise ConfigError("init.embeddings", init.embeddings, f"must be one of {EMBEDDING_INITS}")
  init_lib.parse_rows(init.embedding_rows)
  if init.embedding_rows.strip() and init.embeddings != "mean":
    raise ConfigError("init.embedding_rows", init.embedding_rows,
                      f"only init.embeddings = 'mean' averages rows (it is "
                      f"{init.embeddings!r}); leave it empty")
  if init.from_checkpoint and init.from_hf:
    raise ConfigError("init.from_hf", init.from_hf,
                      "set either init.from_checkpoint or init.from_hf, not both")
