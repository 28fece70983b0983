"""Runs evaluation tasks (tasks.py) on a model and returns their results.

Every task goes through the inference engine (`ponder_jax.infer`): generation tasks through
`Engine.generate` (greedy, KV-cached, exact for pondering models), multiple choice through
`Engine.score`, and perplexity as the trainer's eval computes its loss (`loss.cross_entropy` of
`ponder.forward` on the batches of `pipeline.make_eval_iterators`, with the run's batch size and
batch count, pause id and s), so it is exp(eval/<source>/loss) of the run. With M_inf pauses
the engine appends them to every prompt (or multiple-choice context): that is the only
difference from the same task without pauses.

Compiles dominate on a CPU, so every call of one task has one shape: prompts go in chunks of
exactly `batch_size` rows, and when a task needs several chunks each carries the task's longest
prompt as a filler row (its output is dropped), so every chunk pads to the same width.

A task that fails (a malformed file, an unknown source, a model too short for every item) is
reported with its message under `Results.errors` and the other tasks still run.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from ponder_jax import loss as loss_lib
from ponder_jax.config import ConfigError
from ponder_jax.data import math_corpus, pipeline, procedural, spec as data_spec
from ponder_jax.data.vocab import Vocabulary
from ponder_jax.eval import sets, tasks as tasks_lib
from ponder_jax.model import ponder as ponder_lib


@dataclasses.dataclass
class EvalModel:
  """A model to evaluate, and what is known of the run that trained it.

  `engine` is an `infer.Engine` (anything with its `generate` / `score` and `model.cfg.max_len`
  for the generation and choice tasks); `data` is the run's validated data section (None: no
  run config, e.g. a Hugging Face model; perplexity then reads the shipped text), and
  `eval_batch_size` / `eval_batches` its train.global_batch_size / train.eval_batches.
  """
  engine: Any
  vocab: Vocabulary
  data: data_spec.DataSpec | None = None
  eval_batch_size: int = 16
  eval_batches: int = 4
  source: str = ""
  data_error: str = ""  # why the run's data section could not be used, if so

  @property
  def max_len(self) -> int:
    return self.engine.model.cfg.max_len


@dataclasses.dataclass
class TaskResult:
  """One task's numbers: `metrics` (the whole task), `breakdown` (per length for procedural
  tasks, per problem kind for math), `samples` (one record per item, for inspection)."""
  name: str
  kind: str
  num_pauses: int
  metrics: dict[str, Any]
  breakdown: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
  breakdown_key: str = ""
  samples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  seconds: float = 0.0

  def to_json(self) -> dict[str, Any]:
    out = {"kind": self.kind, "num_pauses": self.num_pauses, "metrics": self.metrics,
           "seconds": round(self.seconds, 2)}
    if self.breakdown:
      out["breakdown_key"] = self.breakdown_key
      out["breakdown"] = self.breakdown
    return out


@dataclasses.dataclass
class Results:
  model: str
  ponder_steps: int | None
  tasks: dict[str, TaskResult] = dataclasses.field(default_factory=dict)
  errors: dict[str, str] = dataclasses.field(default_factory=dict)

  def to_json(self) -> dict[str, Any]:
    return {"model": self.model, "ponder_steps": self.ponder_steps,
            "tasks": {name: r.to_json() for name, r in self.tasks.items()},
            "errors": self.errors}

  def scalars(self, prefix: str = "eval_tasks") -> dict[str, float]:
    """Flat `prefix/<task>/<metric>` numbers (metrics.jsonl, TensorBoard)."""
    out = {}
    for name, result in self.tasks.items():
      for metric, value in result.metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
          out[f"{prefix}/{name}/{metric}"] = float(value)
    return out


# Loading ---------------------------------------------------------------------------------------


def load_model(path: str, *, ponder_steps: int | None = None, mesh=None) -> EvalModel:
  """A trainer workdir / checkpoint (with its run's data section), a converter checkpoint or
  a Hugging Face directory. Without `ponder_steps`, a run's model ponders as its trainer
  evaluated it: `ponder.steps_max` if set, else `ponder.steps`."""
  from ponder_jax.infer import load as load_lib  # pylint: disable=import-outside-toplevel
  experiment = _stored_experiment(path)
  if ponder_steps is None and experiment and experiment.get("ponder"):
    ponder = experiment["ponder"]
    ponder_steps = ponder.get("steps_max") or ponder.get("steps") or 0
  loaded = load_lib.load(path, ponder_steps=ponder_steps, mesh=mesh)
  model = EvalModel(engine=loaded.engine, vocab=loaded.vocab, source=loaded.source)
  if experiment and "data" in experiment:
    train = experiment.get("train", {})
    model.eval_batch_size = int(train.get("global_batch_size", model.eval_batch_size))
    model.eval_batches = max(int(train.get("eval_batches", model.eval_batches)), 1)
    try:
      model.data = data_spec.validate_data_config(experiment["data"])
    except (ConfigError, ValueError, OSError) as e:
      model.data_error = f"the run's data section cannot be used here: {e}"
  return model


def _stored_experiment(path: str) -> dict[str, Any] | None:
  """The experiment config stored with a trainer checkpoint (None for other model dirs)."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  from ponder_jax.train import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  try:
    step_dir = ckpt_lib.resolve_checkpoint_dir(path)
  except (FileNotFoundError, OSError):
    return None
  config_dir = os.path.join(step_dir, "config")
  if not os.path.isdir(config_dir):
    return None
  return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(config_dir)


# Task lists ------------------------------------------------------------------------------------


def expand_names(model: EvalModel, names: Sequence[str]) -> list[str]:
  """`default` and `ppl` (with any @M) replaced by the task names they stand for here."""
  out: list[str] = []
  for name in names:
    base, sep, pauses = name.partition(tasks_lib.PAUSE_SEP)
    if base == tasks_lib.DEFAULT:
      expanded = tasks_lib.default_names(procedural_tasks=_run_procedural_tasks(model.data),
                                         math=_run_math_source(model.data) is not None)
      out += expand_names(model, [n + sep + pauses if n != "ppl" else n for n in expanded])
    elif base == "ppl" and not sep:
      out += [f"ppl:{source}" for source in data_spec.eval_source_names(_ppl_data(model))]
    else:
      out.append(name)
  return list(dict.fromkeys(out))


def _run_procedural_tasks(data: data_spec.DataSpec | None) -> list[str]:
  if data is None:
    return []
  return [s.options["task"] for s in data.sources.values() if s.kind == "procedural"]


def _run_procedural_source(data: data_spec.DataSpec | None, task: str):
  if data is None:
    return None
  return next((s for _, s in sorted(data.sources.items())
               if s.kind == "procedural" and s.options["task"] == task), None)


def _run_math_source(data: data_spec.DataSpec | None):
  if data is None:
    return None
  return next((s for _, s in sorted(data.sources.items()) if s.kind == "math"
               or (s.kind == "finetune" and s.options["generator"] == "math")), None)


def evaluate(model: EvalModel, names: Sequence[str | tasks_lib.TaskSpec] | str, *,
             items: int = 0, batch_size: int = 64, progress: bool = True) -> Results:
  """Runs the tasks, given by name (tasks.py syntax) or as specs; `items` > 0 caps every
  task's item count (per length for procedural tasks). A task's failure is recorded in
  `errors`, not raised."""
  if not (isinstance(items, int) and items >= 0):
    raise ConfigError("items", items, "must be an integer >= 0 (0: each task's own count)")
  if not (isinstance(batch_size, int) and batch_size > 0):
    raise ConfigError("batch_size", batch_size, "must be a positive integer")
  results = Results(model=model.source,
                    ponder_steps=getattr(model.engine, "ponder_steps", None))
  run = _Runner(model, items=items, batch_size=batch_size, progress=progress)
  expanded: list[str | tasks_lib.TaskSpec] = []
  for name in ([names] if isinstance(names, str) else names):
    if isinstance(name, tasks_lib.TaskSpec):
      expanded.append(name)
      continue
    for part in tasks_lib.split_names(name):
      try:
        expanded += expand_names(model, [part])
      except Exception as e:  # pylint: disable=broad-except  # e.g. the run's data cannot open
        results.errors[part] = _message(e)
  done: set[str] = set()
  for task in expanded:
    name = task.name if isinstance(task, tasks_lib.TaskSpec) else task
    if name in done:
      continue
    done.add(name)
    start = time.time()
    try:
      spec = task if isinstance(task, tasks_lib.TaskSpec) else tasks_lib.resolve(task)
      result = run.task(spec)
    except Exception as e:  # pylint: disable=broad-except  # reported; the others still run
      results.errors[name] = _message(e)
      continue
    result.seconds = time.time() - start
    results.tasks[result.name] = result
  return results


def _message(error: Exception) -> str:
  """An error as the user sees it: our own errors name the key or the file and line already."""
  if isinstance(error, (ConfigError, ValueError, OSError)):
    return str(error)
  return f"{type(error).__name__}: {error}"


# Running one task ------------------------------------------------------------------------------


def encode_pair(vocab: Vocabulary, context: str, continuation: str) -> tuple[list[int],
                                                                             list[int]]:
  """Token ids of a (context, continuation) pair as lm-evaluation-harness's HF model makes
  them: trailing spaces of the context move to the continuation, and the continuation's ids
  are what `encode(context + continuation)` adds after `encode(context)`'s length, so a piece
  spanning the boundary is not split. The context starts with bos, as every document the
  model trained on."""
  spaces = len(context) - len(context.rstrip())
  if spaces:
    context, continuation = context[:-spaces], context[-spaces:] + continuation
  context_ids = vocab.encode(context)
  whole = vocab.encode(context + continuation)
  return [vocab.bos_id] + context_ids, whole[len(context_ids):]


def fixed_shape_chunks(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
  """Row indices in chunks of exactly min(batch_size, n) rows. With more than one chunk, each
  holds the longest row as a filler (its output is dropped), so every chunk pads alike and one
  compiled program serves them all; the last chunk is filled up with it too."""
  n = len(lengths)
  if n <= batch_size:
    return [list(range(n))]
  if batch_size == 1:
    return [[i] for i in range(n)]
  longest = int(np.argmax(lengths))
  rest = [i for i in range(n) if i != longest]
  per_chunk = batch_size - 1
  chunks = []
  for start in range(0, len(rest), per_chunk):
    chunk = rest[start:start + per_chunk] + [longest]
    chunks.append(chunk + [longest] * (batch_size - len(chunk)))
  return chunks


def generate(engine: Any, prompts: Sequence[list[int]], *, max_new_tokens: int,
             stop_tokens: Sequence[int] = (), num_pauses: int = 0, batch_size: int = 64,
             sampling: Any = None, progress: bool = False,
             desc: str = "generate") -> tuple[list[list[int]], list[list[int]]]:
  """(completions, prompts as fed, pauses included) of `Engine.generate`, in input order, in
  chunks of one shape (`fixed_shape_chunks`)."""
  completions: list[Any] = [None] * len(prompts)
  fed: list[Any] = [None] * len(prompts)
  extra = {} if sampling is None else {"sampling": sampling}
  for chunk in _progress(fixed_shape_chunks([len(p) for p in prompts], batch_size), desc=desc,
                         enabled=progress):
    generation = engine.generate([prompts[i] for i in chunk], max_new_tokens=max_new_tokens,
                                 stop_tokens=list(stop_tokens), num_pauses=num_pauses, **extra)
    for i, completion, prompt in zip(chunk, generation.completions(), generation.prompts):
      completions[i], fed[i] = completion, prompt
  return completions, fed


def loglikelihoods(engine: Any, pairs: Sequence[tuple[list[int], list[int]]], *,
                   num_pauses: int = 0, batch_size: int = 64, progress: bool = False,
                   desc: str = "score") -> list[Any]:
  """`Engine.score` of each (context ids, continuation ids) pair, in input order: rows in at
  most two width groups (`width_groups`), each in chunks of one shape (`fixed_shape_chunks`).
  The chunks depend on the set of pairs, not on their order, so ponder-eval and the
  lm-evaluation-harness adapter get the same numbers for one task."""
  order = sorted(range(len(pairs)), key=lambda i: (-len(pairs[i][0]) - len(pairs[i][1]),
                                                    pairs[i]))
  lengths = [len(pairs[i][0]) + len(pairs[i][1]) + num_pauses for i in order]
  chunks = [[order[group[i]] for i in chunk] for group in width_groups(lengths)
            for chunk in fixed_shape_chunks([lengths[i] for i in group], batch_size)]
  out: list[Any] = [None] * len(pairs)
  for rows in _progress(chunks, desc=desc, enabled=progress):
    scores = engine.score([pairs[i][0] for i in rows], [pairs[i][1] for i in rows],
                          num_pauses=num_pauses, batch_size=len(rows))
    for i, score in zip(rows, scores):
      out[i] = score
  return out


def width_groups(lengths: Sequence[int], *, bucket: int = 16) -> list[list[int]]:
  """Row indices in one group, or in two (rows up to a cut width, and the rest) when padding
  the short rows to the cut instead of to the longest row saves at least 40% of the padded
  tokens: one more compiled shape for, e.g., short arithmetic questions next to long word
  problems. `bucket` is the multiple Engine.score pads row widths to."""
  padded = [-(-n // bucket) * bucket for n in lengths]
  widest, n = max(padded), len(lengths)
  best_cost, best_cut = n * widest, None
  for cut in sorted(set(padded) - {widest}):
    short = sum(width <= cut for width in padded)
    cost = short * cut + (n - short) * widest
    if cost < best_cost:
      best_cost, best_cut = cost, cut
  if best_cut is None or best_cost > 0.6 * n * widest:
    return [list(range(n))]
  return [[i for i, w in enumerate(padded) if w <= best_cut],
          [i for i, w in enumerate(padded) if w > best_cut]]


def _progress(iterable, *, desc: str, enabled: bool, total: int | None = None):
  if not enabled:
    return iterable
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(iterable, desc=desc, total=total, leave=False, unit="batch", dynamic_ncols=True)


class _Runner:
  """Runs specs on one model; caches what tasks share (perplexity batches)."""

  def __init__(self, model: EvalModel, *, items: int, batch_size: int, progress: bool):
    self.model, self.items, self.batch_size, self.progress = model, items, batch_size, progress
    self._eval_batches: dict[str, list] | None = None

  def task(self, spec: tasks_lib.TaskSpec) -> TaskResult:
    return getattr(self, f"_{spec.kind}")(spec)

  # Perplexity -------------------------------------------------------------------------------
  def _perplexity(self, spec: tasks_lib.TaskSpec) -> TaskResult:
    model, engine, vocab = self.model, self.model.engine, self.model.vocab
    data = _ppl_data(model)
    names = data_spec.eval_source_names(data)
    source = spec.options["source"]
    if source not in names:
      raise ConfigError("tasks", spec.name, f"source '{source}' has no held-out split here; "
                        f"sources with one: {names}" + (f" ({model.data_error})"
                                                        if model.data_error else ""))
    if self._eval_batches is None:
      self._eval_batches = pipeline.make_eval_iterators(
          data, vocab, global_batch_size=model.eval_batch_size,
          num_batches=model.eval_batches)
    fn = engine.jitted("eval_loss_sums", functools.partial(
        _loss_sums, engine.model, engine.ponder, engine.ponder_steps, vocab.pause_id))
    text_V = _text_ids(vocab)
    loss = tokens = 0.0
    num_bytes = 0
    for batch in _progress(self._eval_batches[source], desc=spec.name, enabled=self.progress):
      placed = {k: engine.place(np.asarray(batch[k])) for k in ("tokens", "segment_ids",
                                                                 "positions", "loss_mask")}
      with engine.context():
        sums = jax.device_get(fn(engine.params, placed))
      loss += float(sums["loss"])
      tokens += float(sums["tokens"])
      weights_BxT = np.asarray(loss_lib.target_weights(batch, vocab.pause_id))
      num_bytes += _target_bytes(vocab, text_V, batch, weights_BxT)
    mean = loss / max(tokens, 1.0)
    metrics = {"perplexity": math.exp(mean), "loss": mean,
               "bits_per_byte": loss / math.log(2) / num_bytes if num_bytes else None,
               "tokens": int(tokens), "bytes": num_bytes}
    return TaskResult(spec.name, spec.kind, 0, metrics)

  # Procedural exact match -------------------------------------------------------------------
  def _procedural(self, spec: tasks_lib.TaskSpec) -> TaskResult:
    o, vocab = spec.options, self.model.vocab
    if "path" in o:
      path = tasks_lib.data_path(o["path"])
      task, items = sets.read_procedural_set(path)
      per_length = self.items or o.get("items", 0)
      if per_length:  # the first `per_length` items of each length
        counts: dict[int, int] = {}
        capped = []
        for item in items:
          counts[item.length] = counts.get(item.length, 0) + 1
          if counts[item.length] <= per_length:
            capped.append(item)
        items = capped
    else:
      task, params, lengths, seed = self._procedural_setup(spec)
      items = sets.procedural_items(task, params=params, lengths=lengths,
                                    items=self.items or o["items"], seed=seed,
                                    key=f"tasks.{spec.name}")
    symbols = max(max(it.prompt + it.answer) for it in items) + 1
    if symbols > vocab.num_procedural:
      raise ConfigError("tasks", spec.name, f"needs {symbols} procedural symbols but the "
                        f"vocabulary reserves {vocab.num_procedural}")
    m = spec.num_pauses
    budget = self.model.max_len - m
    fits = [len(it.prompt) + len(it.answer) <= budget for it in items]
    kept = [i for i, ok in enumerate(fits) if ok]
    if not kept:
      raise ConfigError("tasks", spec.name, f"every item is longer than model.max_len = "
                        f"{self.model.max_len} (with {m} pauses)")
    prompts = {i: np.asarray(vocab.procedural_id(np.asarray(items[i].prompt))).tolist()
               for i in kept}
    answers = {i: np.asarray(vocab.procedural_id(np.asarray(items[i].answer))).tolist()
               for i in kept}
    # One generate call shape serves every item whose prompt leaves room for the longest
    # answer. An exact-match item that does not fit it (its prompt and answer fill the context)
    # is checked teacher-forced instead: greedy decoding reproduces the answer iff each answer
    # token is the argmax after the ones before it, which is `Score.is_greedy`. A multiset
    # item has no single answer to force, so it is skipped. When most items need forcing, all
    # exact-match items are forced.
    max_new = max(len(answers[i]) for i in kept)
    generated = [i for i in kept if len(prompts[i]) + max_new <= budget]
    forced = [i for i in kept if i not in set(generated) and items[i].match == "exact"]
    if len(forced) > len(generated):  # a generate call (and its compile) for the few is waste
      forced = [i for i in kept if items[i].match == "exact"]
      generated = [i for i in generated if items[i].match != "exact"]
    outputs: dict[int, list[int] | None] = {}
    fed: dict[int, list[int]] = {}
    if generated:
      completions, as_fed = generate(self.model.engine, [prompts[i] for i in generated],
                                     max_new_tokens=max_new, num_pauses=m,
                                     batch_size=self.batch_size, progress=self.progress,
                                     desc=spec.name)
      for i, completion, prompt in zip(generated, completions, as_fed):
        outputs[i], fed[i] = completion[:len(answers[i])], prompt
    correct: dict[int, bool] = {}
    for i in generated:
      got, want = outputs[i], answers[i]
      correct[i] = got == want if items[i].match == "exact" else sorted(got) == sorted(want)
    if forced:
      scores = loglikelihoods(self.model.engine, [(prompts[i], answers[i]) for i in forced],
                              num_pauses=m, batch_size=self.batch_size,
                              progress=self.progress, desc=f"{spec.name} (teacher-forced)")
      for i, score in zip(forced, scores):
        correct[i], outputs[i] = score.is_greedy, None
        fed[i] = prompts[i] + [vocab.pause_id] * m
    if not correct:
      raise ConfigError("tasks", spec.name, "no item leaves room for its answer within "
                        f"model.max_len = {self.model.max_len} (with {m} pauses)")
    breakdown: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(items):
      row = breakdown.setdefault(str(item.length), {"exact_match": 0.0, "items": 0,
                                                    "skipped": 0})
      row["items" if i in correct else "skipped"] += 1
      row["exact_match"] += correct.get(i, False)
    for row in breakdown.values():
      row["exact_match"] = row["exact_match"] / row["items"] if row["items"] else None
    samples = [{"length": items[i].length, "prompt": fed[i], "answer": answers[i],
                "generated": outputs[i], "correct": correct[i],
                "method": "generated" if outputs[i] is not None else "teacher-forced"}
               for i in sorted(correct)]
    metrics = {"exact_match": float(np.mean(list(correct.values()))), "items": len(correct),
               "skipped": len(items) - len(correct), "teacher_forced": len(forced)}
    return TaskResult(spec.name, spec.kind, m, metrics, breakdown,
                      tasks_lib.LENGTH_PARAM[task], samples)

  def _procedural_setup(self, spec: tasks_lib.TaskSpec):
    """(task, params, lengths, seed): the run's own source of the task if it has one (its
    parameters and seed; its training length and twice that), else the registry's."""
    o = spec.options
    task = o["task"]
    source = _run_procedural_source(self.model.data, task)
    if source is None:
      return task, dict(o["params"]), tuple(o["lengths"]), o["seed"]
    params = {k: v for k, v in source.options.items()
              if k not in ("task", "seed", "num_items", "eval_items")}
    param = tasks_lib.LENGTH_PARAM[task]
    if task == "needle":
      most = params.get("max_pairs", 30)
      lengths = tuple(n for n in tasks_lib.HAYSTACK_SIZES if n <= most) or (most,)
    else:
      trained = params.get(param) or getattr(
          procedural.PROCEDURAL_TASKS[task].Params(), param)
      lengths = (trained, 2 * trained)
    return task, params, lengths, source.options["seed"]

  # Math -------------------------------------------------------------------------------------
  def _math(self, spec: tasks_lib.TaskSpec) -> TaskResult:
    o, vocab, max_len = spec.options, self.model.vocab, self.model.max_len
    source = _run_math_source(self.model.data)
    fields = {f.name for f in dataclasses.fields(math_corpus.MathCorpusConfig)}
    section = {k: v for k, v in (source.options.items() if source else ()) if k in fields}
    config = math_corpus.MathCorpusConfig.from_config(section, source.key if source else "math")
    records = sets.math_records(config, o["split"], self.items or o["items"])
    form = o["form"]
    if form == "auto":
      form = "posterior" if source is not None and source.options.get("thoughts") else "raw"
    if o["mode"] == "thought":
      suffix = [vocab.sol_id, vocab.prior_id]
    else:
      suffix = [vocab.sol_id, vocab.eol_id] if form == "posterior" else []
    prompts = [[vocab.bos_id, *vocab.encode(r["question"]), *suffix] for r in records]
    longest = max(map(len, prompts)) + spec.num_pauses
    max_new = min(o["max_new_tokens"], max_len - longest)
    if max_new < 1:
      raise ConfigError("tasks", spec.name, f"the longest prompt ({longest} tokens) leaves no "
                        f"room to answer within model.max_len = {max_len}")
    # Both modes stop at eos or at a new thought, so they share one compiled decode loop.
    completions, fed = generate(self.model.engine, prompts, max_new_tokens=max_new,
                                stop_tokens=(vocab.eos_id, vocab.sol_id),
                                num_pauses=spec.num_pauses, batch_size=self.batch_size,
                                progress=self.progress, desc=spec.name)
    samples, correct, verified = [], [], []
    for record, completion, prompt in zip(records, completions, fed):
      ids = [t for t in completion if t not in (vocab.eos_id, vocab.sol_id)]
      thought = None
      if o["mode"] == "thought":
        cut = ids.index(vocab.eol_id) if vocab.eol_id in ids else len(ids)
        thought, ids = vocab.decode(ids[:cut]), ids[cut + 1:]
        verified.append(math_corpus.verify({**record, "thought": thought}))
      text = vocab.decode(ids)
      correct.append(text.strip() == record["answer_text"].strip())
      samples.append({"kind": record["kind"], "question": record["question"],
                      "answer": record["answer_text"], "generated": text, "thought": thought,
                      "correct": correct[-1], "verified": verified[-1] if verified else None,
                      "prompt": prompt, "completion": completion})
    metrics = {"accuracy": float(np.mean(correct)), "items": len(records)}
    if verified:
      metrics["thought_verified"] = float(np.mean(verified))
    breakdown: dict[str, dict[str, Any]] = {}
    for sample in samples:
      row = breakdown.setdefault(sample["kind"], {"accuracy": 0.0, "items": 0})
      row["items"] += 1
      row["accuracy"] += sample["correct"]
    for row in breakdown.values():
      row["accuracy"] /= row["items"]
    return TaskResult(spec.name, spec.kind, spec.num_pauses, metrics, breakdown, "kind",
                      samples)

  # Multiple choice --------------------------------------------------------------------------
  def _choice(self, spec: tasks_lib.TaskSpec) -> TaskResult:
    o, vocab = spec.options, self.model.vocab
    items = sets.read_choices(tasks_lib.data_path(o["path"]), context_field=o["context_field"],
                              choices_field=o["choices_field"], gold_field=o["gold_field"])
    limit = self.items or o["items"]
    items = items[:limit] if limit else items
    pairs = []
    for i, item in enumerate(items):
      for j, choice in enumerate(item.choices):
        pairs.append(encode_pair(vocab, item.context, o["target_delimiter"] + choice))
        if not pairs[-1][1]:
          raise ValueError(f"{o['path']}: record {i + 1}, choice {j}: encodes to no tokens")
    scores = loglikelihoods(self.model.engine, pairs, num_pauses=spec.num_pauses,
                            batch_size=self.batch_size, progress=self.progress, desc=spec.name)
    logprobs = [score.logprob for score in scores]
    acc, acc_norm, samples, start = [], [], [], 0
    for item in items:
      lls = np.asarray(logprobs[start:start + len(item.choices)])
      start += len(item.choices)
      pred = int(np.argmax(lls))
      pred_norm = int(np.argmax(lls / np.asarray([len(c) for c in item.choices], float)))
      acc.append(pred == item.gold)
      acc_norm.append(pred_norm == item.gold)
      samples.append({"context": item.context, "choices": list(item.choices),
                      "gold": item.gold, "logprobs": lls.tolist(), "pred": pred,
                      "pred_norm": pred_norm})
    metrics = {"acc": float(np.mean(acc)), "acc_norm": float(np.mean(acc_norm)),
               "items": len(items)}
    return TaskResult(spec.name, spec.kind, spec.num_pauses, metrics, samples=samples)

# Perplexity helpers ------------------------------------------------------------------------------


def _loss_sums(model, ponder_cfg, ponder_steps: int, pause_id: int, params, batch):
  """The trainer's eval sums of one batch: its loss, on its forward (train/trainer.py)."""
  logits = ponder_lib.forward(model, params, batch["tokens"], batch.get("positions"),
                              batch.get("segment_ids"), ponder=ponder_cfg,
                              ponder_steps=ponder_steps)
  return loss_lib.cross_entropy(logits, batch, pause_id=pause_id)[1]


def _ppl_data(model: EvalModel) -> data_spec.DataSpec:
  """The run's data section, or for a model without one the shipped text alone."""
  if model.data is not None:
    return model.data
  if model.data_error:
    raise ValueError(model.data_error)
  config = data_spec.default_data_config()
  config.seq_len = min(config.seq_len, model.max_len)
  return data_spec.validate_data_config(config)


def _text_ids(vocab: Vocabulary) -> np.ndarray:
  """bool [V]: the ids that stand for text (not specials, pauses or procedural symbols)."""
  text_V = np.ones(vocab.vocab_size, bool)
  text_V[list(vocab.special_ids.values())] = False
  if vocab.num_procedural:
    text_V[np.asarray(vocab.procedural_id(np.arange(vocab.num_procedural)))] = False
  return text_V


def _target_bytes(vocab: Vocabulary, text_V: np.ndarray, batch: Mapping[str, np.ndarray],
                  weights_BxT: np.ndarray) -> int:
  """UTF-8 bytes of the scored text: per packed segment, its weighted targets that are text,
  decoded together (multi-byte characters span byte-fallback ids)."""
  tokens_BxL = np.asarray(batch["tokens"])
  targets_BxT, segments_BxT = tokens_BxL[:, 1:], np.asarray(batch["segment_ids"])[:, 1:]
  total = 0
  for targets_T, segments_T, weights_T in zip(targets_BxT, segments_BxT, weights_BxT):
    scored_T = (weights_T > 0) & text_V[np.clip(targets_T, 0, len(text_V) - 1)]
    for segment in np.unique(segments_T[scored_T]):
      ids = targets_T[scored_T & (segments_T == segment)].tolist()
      total += len(vocab.decode(ids).encode("utf-8"))
  return total

