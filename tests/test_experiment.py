"""The Experiment: every section validated once into its typed view, bad values naming the key."""

import pytest

from ponder_jax.config import ConfigError
from ponder_jax.data.spec import DataSpec
from ponder_jax.experiment import Experiment, TrainConfig
from ponder_jax.sharding import MeshConfig
from ponder_jax.train.checkpoint import CheckpointConfig
from ponder_jax.train.metrics import MetricsConfig
from ponder_jax.train.optim import OptimConfig
from tests.configs import tiny
from tests.helpers import with_overrides


def _config(**overrides):
  return with_overrides(tiny.get_config(), overrides)


def test_every_section_is_a_typed_view_of_the_config():
  config = _config(**{"train.microbatches": 2, "checkpoint.keep_period": 5,
                      "mesh.rules": "dp", "optim.name": "lion"})
  exp = Experiment.from_config(config)
  assert isinstance(exp.data, DataSpec) and exp.data.seq_len == config.data.seq_len
  assert exp.train == TrainConfig(**config.train.to_dict()) and exp.train.microbatches == 2
  assert exp.checkpoint == CheckpointConfig(every=0, keep=3, keep_period=5, async_save=False)
  assert exp.mesh == MeshConfig(ici={"data": -1, "fsdp": 1, "tensor": 1},
                                dcn={"data": 1, "fsdp": 1, "tensor": 1}, rules="dp")
  assert exp.mesh.logical_rules and exp.optim.name == "lion"
  assert exp.metrics == MetricsConfig(tensorboard=False, progress_bar=False, plot=False)
  assert exp.total_steps == config.train.steps
  assert OptimConfig.from_config(config.optim) == exp.optim


@pytest.mark.parametrize("overrides, message", [
    ({"train.steps": 0}, r"'train.steps' = 0: must be an integer >= 1"),
    ({"train.microbatches": 3}, r"'train.microbatches' = 3: must divide train.global_batch"),
    ({"train.z_loss": -1.0}, r"'train.z_loss' = -1.0: must be >= 0"),
    ({"train.eval_every": -1}, r"'train.eval_every' = -1: must be an integer >= 0"),
    ({"checkpoint.keep": 0}, r"'checkpoint.keep' = 0: must be an integer >= 1"),
    ({"mesh.ici.data": 0}, r"'mesh.ici.data' = 0: must be a positive integer or -1"),
    ({"mesh.rules": "zero3"}, r"'mesh.rules' = 'zero3'"),
    ({"optim.lr": 0.0}, r"'optim.lr' = 0.0: must be positive"),
    ({"data.seq_len": 1}, r"'data.seq_len' = 1: must be an integer >= 2"),
])
def test_bad_sections_name_the_key(overrides, message):
  with pytest.raises(ConfigError, match=message):
    Experiment.from_config(_config(**overrides))


@pytest.mark.parametrize("section, build, message", [
    ({"steps": 10, "stpes": 3}, TrainConfig.from_config, r"'train.stpes' = 3: unknown key"),
    ({"ici": {"model": 2}}, MeshConfig.from_config, r"'mesh.ici.model' = 2: unknown mesh axis"),
    ({"keep": 1, "every_n": 3}, CheckpointConfig.from_config, r"'checkpoint.every_n' = 3"),
    ({"async_save": 1}, CheckpointConfig.from_config,
     r"'checkpoint.async_save' = 1: must be true or false"),
    ({"plot": "yes"}, MetricsConfig.from_config, r"'metrics.plot' = 'yes': must be true or false"),
])
def test_sections_from_dicts_fail_on_typos_and_types(section, build, message):
  with pytest.raises(ConfigError, match=message):
    build(section)
