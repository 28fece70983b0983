"""The trainer: sharded == single device, accumulation == one batch, exact resume after SIGKILL,
SIGTERM saves, multi-process runs resume on one process, bad checkpoints and NaNs are handled, and
a two-stage run (pretrain -> pause finetuning) works through the CLI."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ponder_jax.data import pipeline
from ponder_jax.experiment import Experiment
from ponder_jax.sharding import make_global_batch
from ponder_jax.sweep import load_config
from ponder_jax.train import checkpoint as ckpt_lib
from ponder_jax.train import init as init_lib
from ponder_jax.train.metrics import read_metrics
from ponder_jax.train.trainer import NonFiniteError, Trainer
from tests.helpers import with_overrides

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(REPO, "configs", "smoke.py")


def smoke(**overrides):
  return with_overrides(load_config(SMOKE), overrides)


def _first_batch(exp):
  it = pipeline.make_train_iterator(exp.data, exp.vocab,
                                    global_batch_size=exp.train.global_batch_size,
                                    process_index=0, process_count=1)
  return next(it)


def _one_step(trainer, state, local_batch):
  batch = make_global_batch(local_batch, trainer.mesh)
  compiled, _ = trainer.compile_train_step(state, batch)
  state, metrics = compiled(state, batch, jax.random.key(0))
  return jax.device_get(state.params), jax.device_get(metrics)


@pytest.mark.parametrize("rules, ici", [
    ("dp", dict(data=2, fsdp=4, tensor=1)),
    ("fsdp", dict(data=2, fsdp=4, tensor=1)),
    ("fsdp_tp", dict(data=2, fsdp=1, tensor=4)),
])
def test_sharded_step_equals_single_device(tmp_path, rules, ici):
  exp = Experiment.from_config(smoke(**{"mesh.rules": rules, "mesh.ici": ici}))
  local = _first_batch(exp)
  single = Trainer(Experiment.from_config(smoke()), str(tmp_path / "a"),
                   devices=jax.devices()[:1])
  state = single.init_state()
  host_state = jax.device_get(state)
  want_params, want = _one_step(single, state, local)

  sharded = Trainer(exp, str(tmp_path / "b"))
  assert dict(sharded.mesh.shape) == {**ici}
  state = jax.device_put(host_state, sharded.state_sharding)
  got_params, got = _one_step(sharded, state, local)
  np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
               got_params, want_params)


def test_microbatches_equal_one_batch(tmp_path):
  exp1 = Experiment.from_config(smoke(**{"train.microbatches": 1}))
  exp4 = Experiment.from_config(smoke(**{"train.microbatches": 4}))
  local = _first_batch(exp1)
  one = Trainer(exp1, str(tmp_path / "a"), devices=jax.devices()[:1])
  four = Trainer(exp4, str(tmp_path / "b"), devices=jax.devices()[:1])
  state = jax.device_get(one.init_state())
  want_params, want = _one_step(one, jax.device_put(state), local)
  got_params, got = _one_step(four, jax.device_put(state), local)
  np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
  np.testing.assert_allclose(got["grad_norm"], want["grad_norm"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
               got_params, want_params)


# Subprocess runs ------------------------------------------------------------------------------

RUN_FLAGS = ["--config.train.steps=40", "--config.train.log_every=1",
             "--config.checkpoint.every=8"]
TOTAL = pipeline.total_train_steps(load_config(SMOKE).data, 40)  # + the warm-up phase


def _env(devices: int = 1):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _train_cmd(workdir, *extra):
  return [sys.executable, "-m", "ponder_jax.cli", f"--config={SMOKE}", f"--workdir={workdir}",
          *RUN_FLAGS, *extra]


def _run(workdir, *extra, devices=1):
  proc = subprocess.run(_train_cmd(workdir, *extra), env=_env(devices), cwd=REPO,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _steps(workdir):
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory)
                if d.isdigit() and os.path.exists(os.path.join(directory, d, "commit_success.txt")))


def _interrupt(workdir, sig):
  """Starts a run and sends `sig` once its first checkpoint (step 8) is complete."""
  proc = subprocess.Popen(_train_cmd(workdir), env=_env(), cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while not _steps(workdir):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
    time.sleep(0.02)
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=120)
  return proc.returncode, err


def _losses(workdir):
  rows = {}
  for row in read_metrics(workdir):
    if "loss" in row:
      rows[row["step"]] = row["loss"]  # a resumed run rewrites the steps after its checkpoint
  return rows


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("reference"))
  _run(workdir)
  return workdir


def _assert_same_run(workdir, reference):
  assert _steps(workdir)[-1] == TOTAL
  got = ckpt_lib.load_params(workdir)
  want = ckpt_lib.load_params(reference)
  jax.tree.map(np.testing.assert_array_equal, got, want)  # bitwise
  assert _losses(workdir) == _losses(reference)  # the same data, in the same order


def test_sigkill_then_resume_is_bitwise_identical(tmp_path, reference_run):
  workdir = str(tmp_path)
  code, _ = _interrupt(workdir, signal.SIGKILL)
  assert code == -signal.SIGKILL
  assert _steps(workdir)[-1] < TOTAL, "the run finished before it was killed"
  proc = _run(workdir)
  assert "Resumed from" in proc.stderr
  _assert_same_run(workdir, reference_run)


def test_sigterm_saves_the_current_step_and_exits_cleanly(tmp_path, reference_run):
  workdir = str(tmp_path)
  code, err = _interrupt(workdir, signal.SIGTERM)
  assert code == 0, err[-3000:]
  steps = _steps(workdir)
  assert "Stopped by SIGTERM after step" in err
  stopped_at = int(err.split("Stopped by SIGTERM after step ")[1].split(";")[0])
  assert steps[-1] == stopped_at < TOTAL
  _run(workdir)
  _assert_same_run(workdir, reference_run)


def test_two_process_run_resumes_on_one_process(tmp_path):
  workdir = str(tmp_path)
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  flags = ["--config.train.steps=8", f"--coordinator_address=127.0.0.1:{port}",
           "--num_processes=2"]
  procs = [subprocess.Popen(_train_cmd(workdir, *flags, f"--process_id={i}"), env=_env(),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  warmup = TOTAL - 40
  assert _steps(workdir)[-1] == 8 + warmup
  # One process, one device: a different mesh; training continues from that checkpoint.
  proc = _run(workdir, "--config.train.steps=12")
  assert "Resumed from" in proc.stderr
  assert _steps(workdir)[-1] == 12 + warmup


# In-process failure handling ----------------------------------------------------------------


def test_truncated_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
  exp = Experiment.from_config(smoke())
  trainer = Trainer(exp, str(tmp_path), devices=jax.devices()[:1])
  state = trainer.init_state()
  it = pipeline.make_train_iterator(exp.config.data, exp.vocab, global_batch_size=8,
                                    process_index=0, process_count=1)
  ckpt = ckpt_lib.Checkpointer(str(tmp_path), keep=3, async_save=False)
  ckpt.save(1, state, it, exp.to_json())
  next(it)
  ckpt.save(2, state.replace(step=state.step + 1), it, exp.to_json())
  # Truncate every array file of step 2.
  for root, _, files in os.walk(os.path.join(ckpt.directory, "2", "state")):
    for name in files:
      path = os.path.join(root, name)
      if os.path.getsize(path) > 64:
        with open(path, "r+b") as f:
          f.truncate(16)
  fresh = pipeline.make_train_iterator(exp.config.data, exp.vocab, global_batch_size=8,
                                       process_index=0, process_count=1)
  with caplog.at_level("ERROR"):
    step, restored = ckpt.restore_latest(trainer.abstract_state, fresh)
  assert step == 1 and int(restored.step) == 0
  assert os.path.join(ckpt.directory, "2") in caplog.text
  ckpt.close()


class _PoisonedTrainer(Trainer):
  """Turns the params into NaN from step 6 on (an injected divergence)."""

  def train_step(self, state, batch, rng):
    new_state, metrics = super().train_step(state, batch, rng)
    poison = state.step >= 6
    params = jax.tree.map(lambda p: jnp.where(poison, jnp.nan, p), new_state.params)
    metrics["param_norm"] = jnp.where(poison, jnp.nan, metrics["param_norm"])
    return new_state.replace(params=params), metrics


def test_nan_stops_without_overwriting_the_last_good_checkpoint(tmp_path):
  config = smoke(**{"checkpoint.every": 4, "train.steps": 12})
  exp = Experiment.from_config(config)
  with pytest.raises(NonFiniteError, match="non-finite training metrics at step 7"):
    _PoisonedTrainer(exp, str(tmp_path), devices=jax.devices()[:1]).run()
  assert _steps(str(tmp_path)) == [4]
  params = ckpt_lib.load_params(str(tmp_path))
  assert all(np.isfinite(p).all() for p in jax.tree.leaves(params))


def test_partial_init_copies_components_and_averages_embeddings():
  fresh = {"token_embed": np.zeros((5, 2)), "lm_head": np.zeros((2, 5)),
           "final_norm": {"scale": np.ones(2)},
           "layers": {"attention": {"query": {"kernel": np.zeros((1, 2, 2))}},
                      "mlp": {"up": {"kernel": np.zeros((1, 2, 3))}},
                      "mlp_norm": {"scale": np.ones((1, 2))}}}
  source = jax.tree.map(lambda x: np.arange(x.size, dtype=np.float32).reshape(x.shape) + 1, fresh)
  out = init_lib.partial_init(fresh, source, components=["attention", "norms"],
                              embeddings="mean")
  np.testing.assert_array_equal(out["layers"]["attention"]["query"]["kernel"],
                                source["layers"]["attention"]["query"]["kernel"])
  np.testing.assert_array_equal(out["layers"]["mlp"]["up"]["kernel"], 0)  # not selected
  np.testing.assert_array_equal(out["final_norm"]["scale"], source["final_norm"]["scale"])
  np.testing.assert_allclose(out["token_embed"], np.broadcast_to([[5.0, 6.0]], (5, 2)))
  np.testing.assert_allclose(out["lm_head"], np.broadcast_to([[3.0], [8.0]], (2, 5)))
  bad = dict(source, layers={**source["layers"],
                             "attention": {"query": {"kernel": np.zeros((1, 2, 3))}}})
  with pytest.raises(ValueError, match="layers/attention/query/kernel has shape"):
    init_lib.partial_init(fresh, bad, components=["attention"])


def test_init_from_checkpoint_takes_the_chosen_components(tmp_path):
  """The procedural paper's warm-up transfer through the trainer: attention from the source,
  the MLP freshly initialised, embeddings set to the mean of the rows the source trained: a
  checkpoint at step 1 of the smoke run has seen only its 4-Dyck warm-up, symbols 0..7, ids
  9..16 (test_init.py covers how the rows are derived)."""
  source_exp = Experiment.from_config(smoke(**{"train.seed": 1}))
  source = Trainer(source_exp, str(tmp_path / "source"), devices=jax.devices()[:1])
  state = source.init_state()
  it = pipeline.make_train_iterator(source_exp.config.data, source_exp.vocab,
                                    global_batch_size=8, process_index=0, process_count=1)
  ckpt = ckpt_lib.Checkpointer(str(tmp_path / "source"), keep=1, async_save=False)
  ckpt.save(1, state, it, source_exp.to_json())
  ckpt.close()
  want = jax.device_get(state.params)

  config = smoke(**{"train.seed": 2, "init.from_checkpoint": str(tmp_path / "source"),
                    "init.components": "attention", "init.embeddings": "mean"})
  target = Trainer(Experiment.from_config(config), str(tmp_path / "target"),
                   devices=jax.devices()[:1])
  got = jax.device_get(target.init_state().params)
  jax.tree.map(np.testing.assert_array_equal, got["layers"]["attention"],
               want["layers"]["attention"])
  assert not np.array_equal(got["layers"]["mlp"]["up"]["kernel"],
                            want["layers"]["mlp"]["up"]["kernel"])
  trained = np.asarray(want["token_embed"], np.float64)[9:17].mean(0)
  np.testing.assert_allclose(got["token_embed"],
                             np.broadcast_to(trained, got["token_embed"].shape), rtol=1e-6)


def test_two_stage_pretrain_then_pause_finetune_through_the_cli(tmp_path):
  """Stage 1 pretrains the tiny model; stage 2 (configs/finetune_math.py over the same model
  config) loads every parameter from it, trains PauseFT rows with its own step count and
  schedule, and evaluates the held-out question -> answer pairs."""
  tiny = os.path.join(REPO, "tests", "configs", "tiny.py")
  pre, ft = str(tmp_path / "pretrain"), str(tmp_path / "finetune")
  stages = [[f"--config={tiny}", f"--workdir={pre}"],
            [f"--config={os.path.join(REPO, 'configs', 'finetune_math.py')}:{tiny}",
             f"--workdir={ft}", f"--config.init.from_checkpoint={pre}",
             "--config.train.seed=1", "--config.train.steps=3", "--config.train.eval_every=0",
             "--config.checkpoint.every=0", "--config.data.sources.math_ft.num_pauses=2",
             "--config.data.sources.math_ft.kinds=('multiplication', 'addition')"]]
  for args in stages:
    proc = subprocess.run([sys.executable, "-m", "ponder_jax.cli", *args], env=_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
  assert _steps(pre) == [3] and _steps(ft) == [3]  # a fresh step count, not 3 + 3
  before, after = ckpt_lib.load_params(pre), ckpt_lib.load_params(ft)
  # Three warm-up steps of at most lr * 3/10 each move a loaded parameter by ~1e-3; a fresh
  # initialisation (std 0.02, another seed) would differ from the pretrained one by far more.
  diffs = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before))]
  assert 0 < max(diffs) < 5e-3, diffs
  rows = read_metrics(ft)
  assert any("eval/math_ft/loss" in row for row in rows)
  assert all(np.isfinite(row["loss"]) for row in rows if "loss" in row)


def test_init_from_a_pondering_export_continues_its_function(tmp_path, capsys):
  """ponder.* left at the defaults takes the export's ponder settings; settings given differ
  only by choice, and are named."""
  from ponder_jax.train.trainer import _with_exported_ponder  # pylint: disable=import-outside-toplevel
  export = tmp_path / "export"
  export.mkdir()
  (export / "config.json").write_text(json.dumps({
      "model_type": "ponder_gpt_neox", "vocab_size": 100, "ponder_steps": 2,
      "ponder_scale_embeds": True, "ponder_top_k": 0}))
  config = smoke()
  config.init.from_hf = str(export)
  config.ponder.update(dict(steps=0, steps_max=0, scale_embeds=False, multiply_initial=False,
                            top_k=0))  # the defaults: nothing chosen
  adopted = _with_exported_ponder(config)
  assert (adopted.ponder.steps, adopted.ponder.scale_embeds) == (2, True)
  assert config.ponder.steps == 0  # the caller's config is left alone
  config.ponder.steps = 3
  kept = _with_exported_ponder(config)
  assert kept.ponder.steps == 3 and "ponder.steps = 3 (export: 2)" in capsys.readouterr().err
