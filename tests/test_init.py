"""Partial init (train/init.py): 'mean' averages only the rows the source trained, positions
follow the positions / everything component, bad init keys fail at start, the transfer config
pair runs through ponder-train, and the ponder_steps sweep's arms differ only in s."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ponder_jax import sweep
from ponder_jax.sweep.runner import parse
from ponder_jax.config import ConfigError, PonderConfig
from ponder_jax.data import vocab as vocab_lib
from ponder_jax.experiment import Experiment
from ponder_jax.train import checkpoint as ckpt_lib
from ponder_jax.train import init as init_lib
from ponder_jax.train.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
PROCEDURAL = os.path.join(CONFIGS, "transfer", "procedural.py")
DOWNSTREAM = os.path.join(CONFIGS, "transfer", "downstream.py")
PONDER_STEPS = os.path.join(CONFIGS, "sweeps", "ponder_steps.py")


def _tree(vocab=6, positions=True):
  """A gpt2-shaped params tree: token table [V, D], untied head [D, V], positions, one layer."""
  tree = {"token_embed": np.zeros((vocab, 2), np.float32),
          "lm_head": np.zeros((2, vocab), np.float32),
          "final_norm": {"scale": np.ones(2, np.float32)},
          "layers": {"attention": {"query": {"kernel": np.zeros((1, 2, 2), np.float32)}},
                     "mlp": {"up": {"kernel": np.zeros((1, 2, 3), np.float32)}},
                     "attention_norm": {"scale": np.ones((1, 2), np.float32)},
                     "mlp_norm": {"scale": np.ones((1, 2), np.float32)}}}
  if positions:
    tree["position_embed"] = np.zeros((4, 2), np.float32)
  return tree


def _numbered(tree):
  return jax.tree.map(lambda x: np.arange(x.size, dtype=np.float32).reshape(x.shape) + 1, tree)


# 'mean' -------------------------------------------------------------------------------------
def test_mean_embeddings_average_only_the_trained_rows():
  # Source table of 6 rows, of which rows 2 and 4 were trained:
  #   row 2 = [5, 6], row 4 = [9, 10]  -> mean [7, 8]
  # Source head [2, 6] (columns are tokens): row 0 = 1..6, row 1 = 7..12
  #   columns 2, 4 = [3, 9] and [5, 11] -> mean column [4, 10]
  fresh, source = _tree(vocab=7), _numbered(_tree(vocab=6))
  out = init_lib.partial_init(fresh, source, components="attention", embeddings="mean",
                              rows=np.array([2, 4]))
  np.testing.assert_array_equal(out["token_embed"], np.tile([[7.0, 8.0]], (7, 1)))
  np.testing.assert_array_equal(out["lm_head"], np.tile([[4.0], [10.0]], (1, 7)))
  # Without rows every source row is averaged (rows 1..6 -> [6, 7]): not what a procedural
  # source needs, whose untrained rows still hold their random init.
  every = init_lib.partial_init(fresh, source, components="attention", embeddings="mean")
  np.testing.assert_array_equal(every["token_embed"][0], [6.0, 7.0])
  # A tied source: the head's mean is the token table's.
  tied = {k: v for k, v in source.items() if k != "lm_head"}
  out = init_lib.partial_init(fresh, tied, components="", embeddings="mean", rows=[2, 4])
  np.testing.assert_array_equal(out["lm_head"], np.tile([[7.0], [8.0]], (1, 7)))
  with pytest.raises(ConfigError, match="init.embedding_rows"):
    init_lib.partial_init(fresh, source, components="", embeddings="mean", rows=[2, 6])


def test_trained_rows_come_from_the_source_runs_data():
  v = vocab_lib.ByteVocabulary()
  dyck_only = sweep.load_config(PROCEDURAL)
  k = dyck_only.data.sources.dyck.k
  np.testing.assert_array_equal(init_lib.trained_rows(dyck_only.to_dict()),
                                v.procedural_id(np.arange(2 * k)))  # ids 9 .. 9 + 2k - 1
  text = sweep.load_config(DOWNSTREAM)
  np.testing.assert_array_equal(
      init_lib.trained_rows(text.to_dict()),
      np.r_[v.bos_id, v.eos_id, vocab_lib.BYTE_OFFSET:vocab_lib.TEXT_OFFSET])
  # The smoke run: Dyck for 4 steps, then math with thoughts and text, pauses at 0.1 (not in
  # procedural data). A checkpoint of the warm-up alone trained only the Dyck symbols.
  smoke = sweep.load_config(os.path.join(CONFIGS, "smoke.py")).to_dict()
  assert init_lib._describe(init_lib.trained_rows(smoke, step=4)) == "9:17"
  assert init_lib._describe(init_lib.trained_rows(smoke)) == "1:3,4:17,265:521"


def test_parse_rows():
  np.testing.assert_array_equal(init_lib.parse_rows("9:12, 1,2"), [1, 2, 9, 10, 11])
  assert init_lib.parse_rows("") is None and init_lib.parse_rows("all") is None
  assert init_lib._describe(init_lib.parse_rows("1,2,9:265,300")) == "1:3,9:265,300"


# Positions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("components, embeddings, transferred", [
    ("everything", "mean", True),
    ("everything", "copy", True),
    ("positions", "fresh", True),
    ("attention,mlp,norms,positions", "mean", True),
    ("attention,mlp,norms,embeddings", "copy", False),
    ("attention,mlp,norms", "mean", False),
])
def test_positions_transfer_with_everything_or_positions_only(components, embeddings,
                                                              transferred):
  fresh, source = _tree(), _numbered(_tree())
  out = init_lib.partial_init(fresh, source, components=components, embeddings=embeddings,
                              rows=[0, 1])
  want = source if transferred else fresh
  np.testing.assert_array_equal(out["position_embed"], want["position_embed"])
  if components == "everything":  # everything else came along too
    for key in ("layers", "final_norm"):
      jax.tree.map(np.testing.assert_array_equal, out[key], source[key])
    if embeddings == "copy":
      np.testing.assert_array_equal(out["token_embed"], source["token_embed"])
  # A model without a position table (neox, llama) takes 'everything' all the same.
  no_pos = init_lib.partial_init(_tree(positions=False), source, components="everything")
  assert "position_embed" not in no_pos


# Validation at start ---------------------------------------------------------------------------
def _tiny(**init):
  config = sweep.load_config(os.path.join(REPO, "tests", "configs", "tiny.py"))
  config.init.update(init)
  return config


@pytest.mark.parametrize("init, key, message", [
    (dict(embeddings="mean", embedding_rows="9:x"), "init.embedding_rows", "'9:x' is not an id"),
    (dict(embeddings="mean", embedding_rows="265:9"), "init.embedding_rows", "non-empty range"),
    (dict(embeddings="mean", embedding_rows="-3"), "init.embedding_rows", "not an id >= 0"),
    (dict(embeddings="copy", embedding_rows="9:265"), "init.embedding_rows",
     "only init.embeddings = 'mean'"),
    (dict(components="attention,posiitons"), "init.components", "unknown component 'posiitons'"),
    (dict(components="positions"), "init.components", "needs a learned position table"),
    (dict(embeddings="average"), "init.embeddings", "must be one of"),
])
def test_bad_init_keys_are_config_errors_at_start(init, key, message):
  with pytest.raises(ConfigError, match=message) as error:
    Experiment.from_config(_tiny(**init))
  assert error.value.key == key


def test_good_init_keys_validate():
  Experiment.from_config(_tiny(components="everything", embeddings="mean",
                               embedding_rows="1,2,9:265"))
  Experiment.from_config(_tiny(components="attention,mlp", embeddings="mean",
                               embedding_rows="all"))


# The transfer config pair -------------------------------------------------------------------
TINY = ("--config.model.d_model=32", "--config.model.n_layers=1", "--config.model.n_heads=2",
        "--config.train.global_batch_size=4", "--config.train.log_every=1",
        "--config.train.eval_batches=1", "--config.data.seq_len=64",
        "--config.metrics.plot=False", "--config.metrics.progress_bar=False",
        "--config.metrics.tensorboard=False")


def _train(config, workdir, *extra):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", JAX_DEFAULT_PRNG_IMPL="rbg")  # rbg: as conftest, faster
  proc = subprocess.run([sys.executable, "-m", "ponder_jax.cli", f"--config={config}",
                         f"--workdir={workdir}", *TINY, *extra], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


@pytest.fixture(scope="module")
def procedural_run(tmp_path_factory):
  """configs/transfer/procedural.py through ponder-train, 2 steps of a tiny model."""
  workdir = str(tmp_path_factory.mktemp("procedural"))
  _train(PROCEDURAL, workdir, "--config.train.steps=2",
         "--config.data.sources.dyck.length=64")
  return workdir


def test_transfer_pair_runs_through_ponder_train(procedural_run, tmp_path):
  # The paper's algorithmic setup: everything, token rows = the mean of the Dyck rows.
  proc = _train(DOWNSTREAM, str(tmp_path / "downstream"), "--config.train.steps=2",
                f"--config.init.from_checkpoint={procedural_run}",
                "--config.init.components=everything", "--config.init.embeddings=mean")
  k = sweep.load_config(PROCEDURAL).data.sources.dyck.k
  assert (f"copied attention, mlp, norms, embeddings, positions; token table and head: mean of "
          f"the source's rows 9:{9 + 2 * k}") in proc.stderr
  assert ckpt_lib.resolve_checkpoint_dir(str(tmp_path / "downstream")).endswith("/2")
  # The substitutive budget trains the text budget less the procedural run's steps.
  assert (sweep.load_config(DOWNSTREAM + ":substitutive").train.steps
          == sweep.load_config(DOWNSTREAM).train.steps - sweep.load_config(PROCEDURAL).train.steps)


@pytest.mark.parametrize("components, embeddings", [("attention,mlp,norms", "fresh"),
                                                    ("everything", "mean")])
def test_downstream_init_takes_the_chosen_components(procedural_run, tmp_path, components,
                                                     embeddings):
  config = sweep.load_config(DOWNSTREAM)
  config.model.update(d_model=32, n_layers=1, n_heads=2)  # as the tiny procedural run
  config.data.seq_len = 64
  config.init.update(from_checkpoint=procedural_run, components=components,
                     embeddings=embeddings)
  trainer = Trainer(Experiment.from_config(config), str(tmp_path), devices=jax.devices()[:1])
  got = jax.device_get(trainer.init_state().params)
  source = ckpt_lib.load_params(procedural_run)
  jax.tree.map(np.testing.assert_array_equal, got["layers"], source["layers"])
  jax.tree.map(np.testing.assert_array_equal, got["final_norm"], source["final_norm"])
  moved = not np.array_equal(got["position_embed"], source["position_embed"])
  assert moved == (components != "everything")
  if embeddings == "mean":
    # The rows of the source run's Dyck symbols (the downstream run's own data is text).
    dyck = vocab_lib.ByteVocabulary().procedural_id(
        np.arange(2 * sweep.load_config(PROCEDURAL).data.sources.dyck.k))
    want = np.asarray(source["token_embed"], np.float64)[dyck].mean(0)
    np.testing.assert_allclose(got["token_embed"], np.broadcast_to(want, got["token_embed"].shape),
                               rtol=1e-6)
  else:
    assert not np.allclose(got["token_embed"], source["token_embed"])


# The ponder_steps sweep -------------------------------------------------------------------------
def _flat(tree, prefix=""):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def test_ponder_steps_sweep_arms_differ_only_in_s(tmp_path):
  runs = sweep.plan(PONDER_STEPS, str(tmp_path), sweep.load_sweep(PONDER_STEPS))
  assert [run.overrides for run in runs] == [{"ponder.steps": s} for s in (0, 1, 3)]
  resolved, models = [], []
  for run in runs:
    exp = Experiment.from_config(parse(run.args))  # the config the run's command line builds
    resolved.append(_flat(json.loads(exp.to_json())))
    model = Trainer(exp, str(tmp_path / run.name), devices=jax.devices()[:1]).model
    models.append((model.cfg, model.ponder_passes))
  for other in resolved[1:]:
    assert {k for k in resolved[0] if resolved[0][k] != other[k]} == {"ponder.steps"}
  # What the config does not show: the network each arm initialises (depth-scaled output
  # projections) is the same one.
  assert models[0] == models[1] == models[2]
  assert models[0][1] == 4  # the deepest arm's s + 1, as the sweep file says


def test_init_passes_pins_the_depth_scaled_init():
  assert PonderConfig(steps=1, steps_max=3).init_depth_passes == 4  # the model's own s + 1
  assert PonderConfig(steps=0, init_passes=4).init_depth_passes == 4
  assert PonderConfig(steps=3, depth_scaled_init=False, init_passes=4).init_depth_passes == 1
  with pytest.raises(ConfigError, match="'ponder.init_passes' = -1"):
    PonderConfig.from_config(dict(init_passes=-1))
