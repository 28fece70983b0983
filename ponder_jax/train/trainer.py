"""The training loop: the same code on one CPU, a GPU box or a TPU pod.

    config -> Experiment (validated) -> mesh + logical rules
    jax.eval_shape(init) -> shardings -> jax.jit(init, out_shardings=...)   (or restore / import)
    loop: global batch -> jitted step (in/out shardings, donated state) -> metrics one step late
          -> periodic eval -> async orbax checkpoints (state, data iterator, config)

The step runs gradient accumulation as a `lax.scan` over microbatches. Resuming is exact: the
state, the grain iterator and the per-step RNG (folded from the step number) are all restored,
so a killed-and-resumed run reaches the same params as an uninterrupted one. SIGTERM saves and
exits cleanly; a non-finite loss or gradient stops the run before anything is saved.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import signal
import time
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils

from ponder_jax import accounting, loss as loss_lib, sharding
from ponder_jax.batch import Batch
from ponder_jax.config import ConfigError, PonderConfig
from ponder_jax.data import pipeline, vocab as vocab_lib
from ponder_jax.experiment import Experiment
from ponder_jax.model import ponder
from ponder_jax.model.transformer import Transformer
from ponder_jax.train import checkpoint as ckpt_lib, init as init_lib, metrics as metrics_lib
from ponder_jax.train.optim import make_optimizer


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


class NonFiniteError(RuntimeError):
  """The loss or gradient became NaN/Inf; the last good checkpoint is left untouched."""


def build_trainer(config, workdir: str) -> "Trainer":
  """Validates `config` and builds its Trainer; with `init.from_hf` the model config, the
  vocabulary and the initial params come from a local Hugging Face directory, placed straight
  onto the mesh (continued pretraining)."""
  model_cfg = vocab = params = None
  if config.init.from_hf:
    from ponder_jax.convert import load_pretrained  # pylint: disable=import-outside-toplevel
    mesh = sharding.MeshConfig.from_config(config.mesh)
    model_cfg, params, vocab = load_pretrained(
        config.init.from_hf, mesh=mesh.make_mesh(), rules=mesh.rules,
        vocab=vocab_lib.run_vocabulary(config.data, config.init))
    config = _with_exported_ponder(config)
  exp = Experiment.from_config(config, model=model_cfg, vocab=vocab)
  return Trainer(exp, workdir, init_params=params)


# The ponder settings that decide which function the params compute (the rest are init/memory).
_PONDER_FUNCTION = ("steps", "steps_max", "scale_embeds", "multiply_initial", "top_k")


def _with_exported_ponder(config):
  """A pondering export continues as the function it computes: with `ponder.*` left at the
  defaults the config takes the export's settings; settings that differ are named, once."""
  from ponder_jax.convert.hf import read_ponder_config  # pylint: disable=import-outside-toplevel
  exported = dataclasses.asdict(read_ponder_config(config.init.from_hf))
  default = dataclasses.asdict(PonderConfig())
  configured = {k: config.ponder[k] for k in _PONDER_FUNCTION}
  if all(exported[k] == default[k] for k in _PONDER_FUNCTION):
    return config  # a plain model: pondering may be switched on for continued pretraining
  if all(configured[k] == default[k] for k in _PONDER_FUNCTION):
    config = copy.deepcopy(config)
    with config.unlocked():
      config.ponder.update({k: exported[k] for k in _PONDER_FUNCTION})
    return config
  differ = [f"ponder.{k} = {configured[k]!r} (export: {exported[k]!r})"
            for k in _PONDER_FUNCTION if configured[k] != exported[k]]
  if differ:
    metrics_lib.announce(f"note: {config.init.from_hf} was exported with other ponder settings; "
                         f"training continues with {', '.join(differ)}")
  return config


class Trainer:
  """Builds everything from an Experiment; `run()` trains to the end (or to a preemption)."""

  def __init__(self, exp: Experiment, workdir: str, *, init_params=None, devices=None):
    self.exp, self.workdir = exp, workdir
    self.mesh = exp.mesh.make_mesh(devices)
    self.rules = exp.mesh.logical_rules
    self.model = Transformer(exp.model, ponder_passes=exp.ponder.init_depth_passes)
    self.optimizer, self.schedule = make_optimizer(exp.optim, exp.total_steps)
    self.source_names = exp.data.source_names
    self.pause_id = exp.vocab.pause_id
    self.seq_len = exp.data.seq_len
    self._init_params = init_params  # e.g. imported from Hugging Face
    self._preempted = False
    self._eval_fn = jax.jit(self.eval_step)
    self._eval_model = None  # train.eval_tasks' model, built at the first eval
    if exp.train.eval_tasks and jax.process_count() > 1:
      raise ConfigError("train.eval_tasks", exp.train.eval_tasks,
                        "eval tasks generate on one process; run ponder-eval on the "
                        "checkpoints of a multi-process run instead")
    self.abstract_state, self.state_sharding = self._abstract_state()
    self.batch_sharding = sharding.batch_sharding(self.mesh)

  @contextlib.contextmanager
  def _context(self):
    """Mesh and logical rules, needed while tracing (the constraints resolve against them)."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield

  # State ------------------------------------------------------------------------------------
  def _init_variables(self, rng):
    tokens = jnp.zeros((1, min(8, self.seq_len)), jnp.int32)
    return self.model.init(rng, tokens)

  def _abstract_state(self):
    boxed = jax.eval_shape(self._init_variables, jax.random.key(0))
    param_sharding = sharding.logical_sharding(boxed, self.mesh, self.rules)["params"]
    params = nn.meta.unbox(boxed)["params"]
    opt_state = jax.eval_shape(self.optimizer.init, params)
    replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    opt_sharding = optax.tree_map_params(
        self.optimizer, lambda _, s: s, opt_state, param_sharding,
        transform_non_params=lambda _: replicated)
    state_sharding = TrainState(step=replicated, params=param_sharding, opt_state=opt_sharding)
    abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                          opt_state=opt_state)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            abstract, state_sharding)
    return abstract, state_sharding

  def init_state(self) -> TrainState:
    """Fresh params (or the given / partially loaded ones) and a fresh optimizer state."""
    init = self.exp.config.init  # a mapping, as train/init.py reads it
    params = self._init_params
    with self._context():
      if params is None:
        params = jax.jit(lambda r: nn.meta.unbox(self._init_variables(r))["params"],
                         out_shardings=self.state_sharding.params)(
                             jax.random.key(self.exp.train.seed))
        if init.from_checkpoint:
          params = init_lib.init_from_checkpoint(params, init)
      params = jax.device_put(params, self.state_sharding.params)
      opt_state = jax.jit(self.optimizer.init,
                          out_shardings=self.state_sharding.opt_state)(params)
    step = jax.device_put(jnp.zeros((), jnp.int32), self.state_sharding.step)
    return TrainState(step=step, params=params, opt_state=opt_state)

  # The step --------------------------------------------------------------------------------
  def _forward_sums(self, params, batch: Batch, steps):
    logits = ponder.forward(self.model, params, batch["tokens"], batch.get("positions"),
                            batch.get("segment_ids"), ponder=self.exp.ponder, ponder_steps=steps)
    _, sums = loss_lib.cross_entropy(logits, batch, pause_id=self.pause_id,
                                     z_loss=self.exp.train.z_loss,
                                     num_sources=len(self.source_names))
    return sums

  def train_step(self, state: TrainState, batch: Batch, rng):
    train = self.exp.train
    step_rng = jax.random.fold_in(rng, state.step)
    steps = ponder.sample_steps(self.exp.ponder, step_rng)
    total_tokens = jnp.maximum(loss_lib.target_weights(batch, self.pause_id).sum(), 1.0)

    def objective(params, microbatch):
      sums = self._forward_sums(params, microbatch, steps)
      return (sums["loss"] + train.z_loss * sums["z_loss"]) / total_tokens, sums

    grad_fn = jax.grad(objective, has_aux=True)
    k = train.microbatches
    if k == 1:
      grads, sums = grad_fn(state.params, batch)
    else:
      # Row i goes to microbatch i % k, so every microbatch spans every data shard.
      micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1),
                           batch)
      def accumulate(acc, microbatch):
        grads, sums = grad_fn(state.params, microbatch)
        return jax.tree.map(jnp.add, acc, (grads, sums)), None
      zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, state.params,
                                                          jax.tree.map(lambda x: x[0], micro)))
      (grads, sums), _ = jax.lax.scan(accumulate, zeros, micro)

    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": sums["loss"] / total_tokens,
        "accuracy": sums["correct"] / total_tokens,
        "tokens": sums["tokens"],
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
        "lr": self.schedule(state.step),
        "ponder_steps": jnp.asarray(steps, jnp.int32),
    }
    if train.z_loss:
      metrics["z_loss"] = sums["z_loss"] / total_tokens
    if "source_tokens" in sums:
      metrics["source_loss"] = sums["source_loss"]
      metrics["source_tokens"] = sums["source_tokens"]
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  def eval_step(self, params, batch: Batch):
    steps = self.exp.ponder.steps_max or self.exp.ponder.steps
    return self._forward_sums(params, batch, steps)

  def compile_train_step(self, state: TrainState, batch) -> tuple[jax.stages.Compiled, float]:
    """AOT-compiles the step for `state`/`batch` (arrays or sharded ShapeDtypeStructs).

    Returns (compiled, seconds); call it as compiled(state, batch, rng).
    """
    jitted = jax.jit(self.train_step,
                     in_shardings=(self.state_sharding, self.batch_sharding, None),
                     out_shardings=(self.state_sharding, None), donate_argnums=0)
    rng = jax.random.key(self.exp.train.seed)
    start = time.time()
    with self._context():
      compiled = jitted.lower(state, batch, rng).compile()
    return compiled, time.time() - start

  # The loop --------------------------------------------------------------------------------
  def run(self) -> TrainState:
    exp = self.exp
    data_iter = pipeline.make_train_iterator(
        exp.data, exp.vocab, global_batch_size=exp.train.global_batch_size,
        process_index=jax.process_index(), process_count=jax.process_count())
    ckpt = ckpt_lib.Checkpointer.from_config(self.workdir, exp.checkpoint)
    restored = ckpt.restore_latest(self.abstract_state, data_iter)
    if restored is not None:
      start_step, state = restored
      metrics_lib.announce(f"Resumed from {ckpt.directory}/{start_step}")
    else:
      start_step, state = 0, self.init_state()
    writer = metrics_lib.MetricsWriter(self.workdir, total_steps=exp.total_steps,
                                       start_step=start_step,
                                       tensorboard=exp.metrics.tensorboard,
                                       progress_bar=exp.metrics.progress_bar)
    if start_step >= exp.total_steps:
      metrics_lib.announce(f"Nothing to do: checkpoint step {start_step} >= total steps "
                           f"{exp.total_steps}")
      writer.close()
      ckpt.close()
      return state
    previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
    try:
      state = self._loop(state, start_step, data_iter, ckpt, writer)
    finally:
      signal.signal(signal.SIGTERM, previous_handler)
      ckpt.close()
      writer.close()
    if jax.process_index() == 0:
      rows = metrics_lib.read_metrics(self.workdir)
      print(metrics_lib.results_table(rows))
      plot = metrics_lib.plot_losses(self.workdir, rows) if exp.metrics.plot else None
      if plot:
        print(f"loss plot: {plot}")
    return state

  def _on_sigterm(self, signum, frame):  # pylint: disable=unused-argument
    logging.warning("SIGTERM received: saving a checkpoint at the current step and exiting.")
    self._preempted = True

  def _should_stop(self) -> bool:
    if jax.process_count() == 1:
      return self._preempted
    flags = multihost_utils.process_allgather(np.asarray(self._preempted))
    return bool(np.any(flags))

  def _next_batch(self, data_iter) -> Batch:
    return sharding.make_global_batch(next(data_iter), self.mesh)

  def _loop(self, state, start_step, data_iter, ckpt, writer) -> TrainState:
    exp = self.exp
    train, checkpoint = exp.train, exp.checkpoint
    t = time.time()
    batch = self._next_batch(data_iter)
    data_wait = time.time() - t
    compiled, compile_s = self.compile_train_step(state, batch)
    rng = jax.random.key(train.seed)
    step_fn = lambda state, batch: compiled(state, batch, rng)
    metrics_lib.announce(f"Compiled the train step in {compile_s:.1f} s; phase "
                         f"'{data_iter.phase_name}' from step {start_step}")
    writer.write(start_step, {"compile_seconds": compile_s})
    clock = _StepClock(self, writer, compiled_flops(compiled))
    eval_iters = None
    pending = None  # the report of the previous step, made once the next one is dispatched
    for step in range(start_step, exp.total_steps):
      state, step_metrics = step_fn(state, batch)
      done = step + 1
      if pending is not None:
        pending()
      at_end = done == exp.total_steps
      evaluate = (train.eval_every and done % train.eval_every == 0) or at_end
      stop = self._should_stop()
      save = (checkpoint.every and done % checkpoint.every == 0) or at_end or stop
      pending = functools.partial(clock.report, done, step_metrics, data_wait)
      if evaluate or save:  # report now: the step's own time, and no row lost to a crash
        pending()
        pending = None
      if evaluate:
        t = time.time()
        if eval_iters is None:
          eval_iters = pipeline.make_eval_iterators(
              exp.data, exp.vocab, global_batch_size=train.global_batch_size,
              process_index=jax.process_index(), process_count=jax.process_count(),
              num_batches=train.eval_batches)
        self._evaluate(state.params, eval_iters, writer, done)
        clock.side("eval_seconds", time.time() - t)
      if save:
        # The iterator has yielded exactly `done` batches: the next one is fetched below.
        t = time.time()
        ckpt.save(done, state, data_iter, exp.to_json())
        clock.side("save_seconds", time.time() - t)
        metrics_lib.announce(f"step {done}: saving checkpoint {ckpt.directory}/{done}")
      if stop:
        logging.warning("Stopped by SIGTERM after step %d; checkpoint saved.", done)
        break
      if not at_end:
        t = time.time()
        phase = data_iter.phase_name
        batch = self._next_batch(data_iter)
        data_wait = time.time() - t
        if data_iter.phase_name != phase:
          metrics_lib.announce(f"step {done}: phase '{data_iter.phase_name}' begins")
    if pending is not None:
      pending()
    return state

  def _check_finite(self, step, step_metrics) -> None:
    values = jax.device_get({k: step_metrics[k] for k in ("loss", "grad_norm", "param_norm")})
    if not all(np.isfinite(v) for v in values.values()):
      raise NonFiniteError(
          f"non-finite training metrics at step {step}: {values}; stopping without saving "
          f"(the last good checkpoint is kept). Lower optim.lr, enable optim.clip_norm or "
          f"train.z_loss, or inspect the batch at this step.")

  def _evaluate(self, params, eval_iters, writer, step) -> None:
    scalars = {}
    with self._context():
      for name, batches in eval_iters.items():
        totals = None
        for local in batches:
          sums = self._eval_fn(params, sharding.make_global_batch(local, self.mesh))
          sums = {k: sums[k] for k in ("loss", "tokens", "correct")}
          totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        if totals is None:
          continue
        totals = jax.device_get(totals)
        count = max(float(totals["tokens"]), 1.0)
        scalars[f"eval/{name}/loss"] = float(totals["loss"]) / count
        scalars[f"eval/{name}/accuracy"] = float(totals["correct"]) / count
    scalars.update(self._eval_tasks(params))
    writer.write(step, scalars)
    metrics_lib.announce(f"eval @{step}: " + ", ".join(f"{k.removeprefix('eval/')}={v:.4g}"
                                                      for k, v in scalars.items()))


  def _eval_tasks(self, params) -> dict[str, float]:
    """`train.eval_tasks` (eval/tasks.py) on the current params, as `eval_tasks/<task>/<metric>`
    scalars. The engine is built once, so its compiled programs serve every eval."""
    exp, train = self.exp, self.exp.train
    if not train.eval_tasks:
      return {}
    # pylint: disable=import-outside-toplevel
    from ponder_jax.eval import runner
    from ponder_jax.infer import Engine
    if self._eval_model is None:
      vocab = exp.vocab
      engine = Engine(self.model, params, exp.ponder, pad_id=vocab.pad_id,
                      pause_id=vocab.pause_id if vocab.pause_id < exp.model.vocab_size else None,
                      vocab_size=vocab.vocab_size,
                      ponder_steps=exp.ponder.steps_max or exp.ponder.steps, mesh=self.mesh,
                      rules=exp.mesh.rules)
      self._eval_model = runner.EvalModel(
          engine, vocab, data=exp.data, eval_batch_size=train.global_batch_size,
          eval_batches=train.eval_batches, source=self.workdir)
    self._eval_model.engine.params = params
    try:
      results = runner.evaluate(self._eval_model, train.eval_tasks, items=train.eval_items,
                                progress=False)
    finally:
      self._eval_model.engine.params = None  # the next step donates these buffers
    for name, message in results.errors.items():
      logging.error("train.eval_tasks: task %s failed: %s", name, message)
    return results.scalars()


def compiled_flops(compiled: jax.stages.Compiled) -> float:
  """XLA's FLOP estimate for one call, summed over devices (0 when unavailable)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  # not every backend implements it
    return 0.0
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", 0.0)) * jax.device_count()


class _StepClock:
  """Turns a step's device metrics into a logged row: throughput, MFU, time spent elsewhere.

  A step's time is the interval between consecutive metric fetches (in steady state the loop
  runs at the device's pace), minus the eval and save time spent in between, which are reported
  on the next row as eval_seconds / save_seconds.
  """

  def __init__(self, trainer: Trainer, writer, xla_flops_per_step: float):
    exp = trainer.exp
    self.trainer, self.writer, self.xla_flops = trainer, writer, xla_flops_per_step
    self.tokens_per_step = exp.train.global_batch_size * trainer.seq_len
    mean_steps = (exp.ponder.steps if not exp.ponder.steps_max
                  else (exp.ponder.steps + exp.ponder.steps_max) / 2)
    self.flops_per_token = accounting.training_flops_per_token(exp.model, trainer.seq_len,
                                                               mean_steps)
    self.peak = (accounting.peak_flops_per_device() or 0.0) * jax.device_count()
    self.last = time.time()
    self.extra: dict[str, float] = {}

  def side(self, name: str, seconds: float) -> None:
    self.extra[name] = self.extra.get(name, 0.0) + seconds

  def report(self, step: int, step_metrics, data_wait: float) -> None:
    m = jax.device_get(step_metrics)
    now = time.time()
    step_seconds = max(now - self.last - sum(self.extra.values()), 1e-9)
    self.last, extra, self.extra = now, self.extra, {}
    if not all(np.isfinite(m[k]) for k in ("loss", "grad_norm", "param_norm")):
      self.trainer._check_finite(step, step_metrics)  # pylint: disable=protected-access
    tokens_per_sec = self.tokens_per_step / step_seconds
    if step % self.trainer.exp.train.log_every and step != self.trainer.exp.total_steps:
      self.writer.progress(step, float(m["loss"]), tokens_per_sec)
      return
    scalars = {k: float(v) for k, v in m.items() if np.ndim(v) == 0}
    scalars.update(step_seconds=step_seconds, tokens_per_sec=tokens_per_sec,
                   data_wait_seconds=data_wait, **extra)
    if self.peak:
      scalars["mfu"] = self.flops_per_token * tokens_per_sec / self.peak
      if self.xla_flops:
        scalars["mfu_xla"] = self.xla_flops / step_seconds / self.peak
    if "source_tokens" in m:
      for name, total, count in zip(self.trainer.source_names, m["source_loss"],
                                    m["source_tokens"]):
        if count:
          scalars[f"source/{name}/loss"] = float(total / count)
    self.writer.write(step, scalars)
    self.writer.progress(step, scalars["loss"], tokens_per_sec)
    metrics_lib.log_line(step, {k: scalars[k] for k in ("loss", "accuracy", "grad_norm", "lr",
                                                        "tokens_per_sec", "mfu") if k in scalars})
