"""The BoLT EM loop on the synthetic math corpus (`ponder-bolt`; METHODS.md §4.3).

    warmstart/      train on `warmstart_problems` problems with their ground-truth thoughts
    iter_1/estep/   the warm-start model writes thoughts for `corpus_problems` problems whose
                    thoughts are hidden (importance-weighted, estep.py); thought-record shards
    iter_1/mstep/   train on them (plus the warm-start set), restarting from the base (fresh
                    init, or `bolt.base` when given) with a fresh optimizer, or continuing
    iter_2/ ...     the previous iteration's model is the next teacher
    baseline/       raw-only: the same problems without thoughts, for as many steps as an
                    M-step (equal raw data and equal training tokens)
    summary.json, summary.md, summary.png   per iteration: accuracy (direct, with thoughts),
                    ELBO per token, close rate, share of generated thoughts `verify` accepts

The experiment config (model, ponder, optim, train, data.vocab, ...) is the M-step's; the `bolt`
section (`BoltConfig`) drives the loop. Every stage is resumable: trainers resume from their
checkpoints, the E-step from its shards, and a stage's `done.json` marks it finished.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from typing import Any, Mapping

import ml_collections

from ponder_jax.bolt import estep as estep_lib
from ponder_jax.data import math_corpus, pipeline, sources
from ponder_jax.validation import ConfigError, check, from_mapping

RESTARTS = ("base", "continue")


@dataclasses.dataclass(frozen=True)
class BoltConfig:
  """The `bolt` section."""
  iterations: int = 2
  warmstart_problems: int = 1000  # with ground-truth thoughts
  warmstart_steps: int = 1000
  corpus_problems: int = 4000  # thoughts hidden: the E-step infers them
  corpus_seed: int = 1  # the warm-start set uses data.seed's math corpus seed 0
  mstep_steps: int = 1000
  restart: str = "base"  # base: fresh model each M-step (BoLT); continue: from the teacher
  base: str = ""  # a checkpoint to restart from ('' with restart=base: a fresh init)
  include_warmstart: bool = True  # the M-step also trains on the warm-start set
  baseline: bool = True
  eval_items: int = 200
  estep: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @classmethod
  def from_config(cls, section: Any) -> "BoltConfig":
    section = dict(section.to_dict() if isinstance(section, ml_collections.ConfigDict)
                   else section or {})
    cfg = from_mapping(cls, section, "bolt")
    for key in ("iterations", "warmstart_problems", "warmstart_steps", "corpus_problems",
                "mstep_steps", "eval_items"):
      value = getattr(cfg, key)
      check(isinstance(value, int) and value >= 1, f"bolt.{key}", value,
            "must be an integer >= 1")
    check(cfg.restart in RESTARTS, "bolt.restart", cfg.restart, f"must be one of {RESTARTS}")
    check(not cfg.base or os.path.isdir(cfg.base), "bolt.base", cfg.base, "no such directory")
    cfg.estep_config()  # validates bolt.estep
    return cfg

  def estep_config(self) -> estep_lib.EStepConfig:
    return from_mapping(estep_lib.EStepConfig, self.estep, "bolt.estep").validated()


def default_bolt_config() -> ml_collections.ConfigDict:
  fields = {f.name: f.default for f in dataclasses.fields(BoltConfig)
            if f.default is not dataclasses.MISSING}
  fields["estep"] = dataclasses.asdict(estep_lib.EStepConfig())
  return ml_collections.ConfigDict(fields)


# Stages ----------------------------------------------------------------------------------------


def _math_section(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The math corpus settings of the experiment: its `data.sources.math` section (kinds,
  difficulty), if the config has one."""
  section = config.data.sources.get("math")
  return {} if section is None else {k: v for k, v in section.to_dict().items()
                                     if k in {f.name for f in dataclasses.fields(
                                         math_corpus.MathCorpusConfig)}}


def _with_data(config: ml_collections.ConfigDict, steps: int, sources_: dict[str, Any],
               init: str = "") -> ml_collections.ConfigDict:
  """The experiment config with these sources (equal weights), steps and init checkpoint."""
  c = copy.deepcopy(config)
  with c.unlocked():
    c.data.sources = ml_collections.ConfigDict(sources_)
    c.data.phases = ml_collections.ConfigDict(
        {"main": pipeline.phase_config(0, **{name: 1.0 for name in sources_})})
    c.data.phase_order = "main"
    c.train.steps = steps
    c.init.from_checkpoint = init
    c.init.components = "everything"
    c.init.embeddings = "copy"
    c.init.from_hf = ""
    if "bolt" in c:
      del c["bolt"]
  return c


def _train(config: ml_collections.ConfigDict, workdir: str) -> None:
  from ponder_jax.train.trainer import build_trainer  # pylint: disable=import-outside-toplevel
  build_trainer(config, workdir).run()


def _evaluate(workdir: str, items: int) -> dict[str, float]:
  from ponder_jax.eval import runner  # pylint: disable=import-outside-toplevel
  results = runner.evaluate(runner.load_model(workdir), ["math_direct", "math_thought"],
                            items=items, progress=False)
  if results.errors:
    raise RuntimeError(f"{workdir}: evaluation failed: {results.errors}")
  return {"accuracy_direct": results.tasks["math_direct"].metrics["accuracy"],
          "accuracy_thought": results.tasks["math_thought"].metrics["accuracy"],
          "thought_verified": results.tasks["math_thought"].metrics.get("thought_verified", 0.0)}


def _stage(directory: str, run) -> dict[str, Any]:
  """Runs `run()` once: its result is kept in directory/done.json and read back afterwards."""
  marker = os.path.join(directory, "done.json")
  if os.path.exists(marker):
    with open(marker, encoding="utf-8") as f:
      return json.load(f)
  os.makedirs(directory, exist_ok=True)
  result = run()
  with open(marker + ".tmp", "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  os.replace(marker + ".tmp", marker)
  return result


def hidden_corpus(section: Mapping[str, Any], seed: int,
                  size: int) -> list[estep_lib.LatentDocument]:
  """`size` training problems as raw documents (question, answer); the answer's thought is
  what the E-step infers."""
  config = math_corpus.MathCorpusConfig.from_config({**section, "seed": seed,
                                                     "train_size": size}, "bolt.corpus")
  corpus = math_corpus.MathCorpus(config, "train", prefix="bolt.corpus")
  return [estep_lib.LatentDocument(f"math/{seed}/{i}", (r["question"], r["answer_text"]),
                                   (False, True)) for i, r in enumerate(
                                       corpus[i] for i in range(len(corpus)))]


def run(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> list[dict]:
  """The whole loop (module docstring); returns the summary rows."""
  bolt = BoltConfig.from_config(config.get("bolt", {}))
  math = _math_section(config)
  warm_source = sources.source_config("math", **{**math, "train_size": bolt.warmstart_problems,
                                                  "thoughts": True})
  rows = []

  def evaluated(name: str, stage_dir: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    scores = _stage(os.path.join(stage_dir, "eval"), lambda: _evaluate(stage_dir,
                                                                       bolt.eval_items))
    rows.append({"stage": name, **extra, **scores})
    return rows[-1]

  warm_dir = os.path.join(workdir, "warmstart")
  _stage(warm_dir, lambda: _train(_with_data(config, bolt.warmstart_steps,
                                             {"math": warm_source}), warm_dir) or {})
  evaluated("warm start", warm_dir, {})
  if bolt.baseline:
    base_dir = os.path.join(workdir, "baseline")
    raw = {"corpus": sources.source_config("math", **{
        **math, "seed": bolt.corpus_seed, "train_size": bolt.corpus_problems,
        "thoughts": False})}
    if bolt.include_warmstart:
      raw["math"] = sources.source_config("math", **{
          **math, "train_size": bolt.warmstart_problems, "thoughts": False})
    _stage(base_dir, lambda: _train(_with_data(config, bolt.mstep_steps, raw), base_dir) or {})
    evaluated("raw baseline", base_dir, {})

  docs = hidden_corpus(math, bolt.corpus_seed, bolt.corpus_problems)
  teacher = warm_dir
  for i in range(1, bolt.iterations + 1):
    iter_dir = os.path.join(workdir, f"iter_{i}")
    estep_dir = os.path.join(iter_dir, "estep")

    def e_step(teacher=teacher, estep_dir=estep_dir):
      from ponder_jax.infer import load  # pylint: disable=import-outside-toplevel
      loaded = load.load(teacher)
      return estep_lib.run_estep(loaded.engine, loaded.vocab, docs, estep_dir,
                                 bolt.estep_config(), progress=progress)

    summary = _stage(estep_dir, e_step)
    data = {"latent": sources.source_config(
        "thoughts", path=os.path.join(estep_dir, "shard-*.jsonl"), eval_fraction=0.0)}
    if bolt.include_warmstart:
      data["math"] = warm_source
    init = bolt.base if bolt.restart == "base" else teacher
    mstep_dir = os.path.join(iter_dir, "mstep")
    _stage(mstep_dir, lambda: _train(_with_data(config, bolt.mstep_steps, data, init),
                                     mstep_dir) or {})
    evaluated(f"EM iteration {i}", mstep_dir, {
        "elbo_per_token": summary.get("elbo_per_token"), "close_rate": summary.get("close_rate"),
        "unclosed_chunks": summary.get("unclosed_chunks")})
    teacher = mstep_dir
  write_summary(rows, workdir)
  return rows


def write_summary(rows: list[dict], workdir: str) -> None:
  """summary.json, summary.md (a table) and summary.png (accuracy and ELBO per stage)."""
  with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=1)
  columns = ["stage", "accuracy_direct", "accuracy_thought", "thought_verified",
             "elbo_per_token", "close_rate"]
  fmt = lambda v: "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
  with open(os.path.join(workdir, "summary.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
  names = [row["stage"] for row in rows]
  for key in ("accuracy_direct", "accuracy_thought", "thought_verified"):
    left.plot(names, [row.get(key) for row in rows], marker="o", label=key)
  left.set_ylabel("held-out share")
  left.legend()
  left.tick_params(axis="x", rotation=30)
  em = [row for row in rows if row.get("elbo_per_token") is not None]
  right.plot([row["stage"] for row in em], [row["elbo_per_token"] for row in em], marker="o")
  right.set_ylabel("ELBO per answer token (E-step)")
  right.tick_params(axis="x", rotation=30)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "summary.png"), dpi=100)
  plt.close(fig)


def main(argv=None) -> None:
  """`ponder-bolt --config=configs/bolt_synthetic.py --workdir=runs/bolt`."""
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  config = config_flags.DEFINE_config_file("config", None, "config file with a bolt section",
                                           lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "where every stage goes")
  flags.mark_flags_as_required(["config", "workdir"])

  def _main(argv):
    del argv
    from ponder_jax import xla_flags  # pylint: disable=import-outside-toplevel
    xla_flags.apply()
    from ponder_jax.train.metrics import quiet_library_logs  # pylint: disable=import-outside-toplevel
    quiet_library_logs()
    try:
      run(config.value, workdir.value)
    except ConfigError as e:
      raise SystemExit(f"ponder-bolt: invalid config: {e}") from None

  app.run(_main, argv)


if __name__ == "__main__":
  main()
