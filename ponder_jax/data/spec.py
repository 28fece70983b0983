"""The `data` config section: its defaults, its validation into a typed `DataSpec` (once, at
start: `Experiment.from_config`), the phase schedule and the step budget.

Sources (`data.sources.<name>`, see sources.py) are mixed in phases (`data.phases.<name>`:
`steps` and `weights` = {source: positive weight}) that run in the order `data.phase_order`;
every phase but the last lasts `steps` steps (0 skips it), the last runs to the end (its `steps`
must be 0). `total_train_steps` applies `data.budget`: 'additive' puts the warm-up phases' steps
on top of train.steps, 'substitutive' keeps train.steps in total.

Not here: reading, mixing and packing the data (streams.py, pipeline.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import ml_collections

from ponder_jax.data import sources as sources_lib
from ponder_jax.validation import check, is_int

BUDGETS = ("additive", "substitutive")
PACKING_ALGORITHMS = ("best_fit", "first_fit")  # grain's packers (streams.PACKERS)
_TOP_KEYS = ("vocab", "seq_len", "seed", "budget", "phase_order", "sources", "phases", "pause",
             "packing", "read_threads", "prefetch_batches")
_PAUSE_KEYS = ("ratio", "in_eval")
_PACKING_KEYS = ("algorithm", "bins", "shuffle_bins", "split_long")


def phase_config(steps: int = 0, **weights: float) -> ml_collections.ConfigDict:
  """A `data.phases.<name>` section: `steps` (0: skipped, or the last phase) and weights."""
  return ml_collections.ConfigDict({"steps": steps, "weights": dict(weights)})


def default_data_config() -> ml_collections.ConfigDict:
  """The `data` section: the shipped Shakespeare text alone, one phase, no pauses.

  Every key can be overridden on the command line (`--config.data.seq_len=512`); new sources and
  phases are added in an experiment config with `sources.source_config` and `phase_config`.
  """
  c = ml_collections.ConfigDict()
  c.vocab = "sentencepiece"  # spec for vocab.load_vocabulary
  c.seq_len = 256  # tokens per packed row
  c.seed = 0  # shuffles, thought forms, pause positions, bin order
  c.budget = "additive"  # how warm-up phases count against train.steps (see total_train_steps)
  c.phase_order = "main"  # comma-separated names of data.phases, in the order they run
  c.sources = ml_collections.ConfigDict({"shakespeare": sources_lib.source_config("text")})
  c.phases = ml_collections.ConfigDict({"main": phase_config(0, shakespeare=1.0)})
  c.pause = ml_collections.ConfigDict({
      "ratio": 0.0,  # pauses per token inserted in pretraining (METHODS.md §2.1: 0.1)
      "in_eval": False,  # False: eval streams score every arm on the same real tokens
  })
  c.packing = ml_collections.ConfigDict({
      "algorithm": "first_fit",  # or best_fit
      "bins": 0,  # rows packed at once; 0: the host-local batch size
      "shuffle_bins": True,
      "split_long": True,  # cut documents longer than seq_len into pieces (else an error)
  })
  c.read_threads = 0  # grain read threads per source (0: read in the consuming thread)
  c.prefetch_batches = 2  # batches packed ahead in a background thread (0: none)
  return c


@dataclasses.dataclass(frozen=True)
class PhaseSpec:
  name: str
  steps: int
  weights: Mapping[str, float]


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """A validated `data` section (`DataSpec.from_config`, or `validate_data_config`)."""
  vocab: str
  seq_len: int
  seed: int
  budget: str
  sources: Mapping[str, sources_lib.SourceSpec]
  phases: tuple[PhaseSpec, ...]
  pause_ratio: float
  pause_in_eval: bool
  packing: Mapping[str, Any]
  read_threads: int
  prefetch_batches: int

  @classmethod
  def from_config(cls, section: Any) -> "DataSpec":
    return validate_data_config(section)

  @property
  def source_names(self) -> tuple[str, ...]:
    return tuple(sorted(self.sources))

  @property
  def warmup_steps(self) -> int:
    return sum(p.steps for p in self.phases[:-1])

  def schedule(self) -> list[tuple[int, int, int | None]]:
    """(phase index, first step, end step or None) of every phase that runs."""
    out, start = [], 0
    for i, phase in enumerate(self.phases):
      last = i == len(self.phases) - 1
      if last:
        out.append((i, start, None))
      elif phase.steps > 0:
        out.append((i, start, start + phase.steps))
        start += phase.steps
    return out


def _section(cfg: Any, key: str, known: Sequence[str]) -> dict[str, Any]:
  section = sources_lib.section_dict(cfg)
  for name in section:
    check(name in known, f"{key}.{name}", section[name],
          f"unknown key; known keys are {sorted(known)}")
  return section


def validate_data_config(cfg: ml_collections.ConfigDict | Mapping[str, Any]) -> DataSpec:
  """Validates the `data` section once at start; raises ConfigError naming the bad key.

  Checks every source's kind, keys, task and files (without reading the data), the phases, their
  order and weights, the budget, pause and packing settings.
  """
  c = {**default_data_config().to_dict(), **_section(cfg, "data", _TOP_KEYS)}
  check(isinstance(c["vocab"], str) and bool(c["vocab"]), "data.vocab", c["vocab"],
        "must be a vocabulary spec such as 'sentencepiece' or 'byte'")
  check(is_int(c["seq_len"]) and c["seq_len"] >= 2, "data.seq_len", c["seq_len"],
        "must be an integer >= 2")
  check(is_int(c["seed"]) and 0 <= c["seed"] < 2**32, "data.seed", c["seed"],
        "must be an integer in [0, 2**32)")
  check(c["budget"] in BUDGETS, "data.budget", c["budget"], f"must be one of {BUDGETS}")
  for key in ("read_threads", "prefetch_batches"):
    check(is_int(c[key]) and c[key] >= 0, f"data.{key}", c[key], "must be an integer >= 0")

  source_sections = sources_lib.section_dict(c["sources"])
  check(bool(source_sections), "data.sources", source_sections, "defines no source")
  sources = {name: sources_lib.validate_source(name, section)
             for name, section in source_sections.items()}

  phase_sections = sources_lib.section_dict(c["phases"])
  check(bool(phase_sections), "data.phases", phase_sections, "defines no phase")
  order = [name.strip() for name in str(c["phase_order"]).split(",") if name.strip()]
  if not order and len(phase_sections) == 1:
    order = list(phase_sections)
  check(sorted(order) == sorted(phase_sections) and len(set(order)) == len(order),
        "data.phase_order", c["phase_order"],
        f"must name every phase of data.phases exactly once ({sorted(phase_sections)})")
  phases = []
  for i, name in enumerate(order):
    key = f"data.phases.{name}"
    section = _section(phase_sections[name], key, ("steps", "weights"))
    steps = section.get("steps", 0)
    weights = sources_lib.section_dict(section.get("weights", {}))
    last = i == len(order) - 1
    check(is_int(steps) and steps >= 0, f"{key}.steps", steps, "must be an integer >= 0")
    check(not last or steps == 0, f"{key}.steps", steps,
          "the last phase runs to the end of training: its steps must be 0")
    check(bool(weights), f"{key}.weights", weights, "names no source")
    for source, weight in weights.items():
      check(source in sources, f"{key}.weights.{source}", weight,
            f"no such source; data.sources defines {sorted(sources)}")
      check(isinstance(weight, (int, float)) and not isinstance(weight, bool)
            and math.isfinite(weight) and weight > 0, f"{key}.weights.{source}", weight,
            "must be a positive number")
    phases.append(PhaseSpec(name, int(steps), {k: float(v) for k, v in weights.items()}))

  p = {**default_data_config().pause.to_dict(), **_section(c["pause"], "data.pause", _PAUSE_KEYS)}
  check(isinstance(p["ratio"], (int, float)) and 0.0 <= p["ratio"] < 1.0, "data.pause.ratio",
        p["ratio"], "must lie in [0, 1)")
  check(isinstance(p["in_eval"], bool), "data.pause.in_eval", p["in_eval"],
        "must be true or false")
  k = {**default_data_config().packing.to_dict(),
       **_section(c["packing"], "data.packing", _PACKING_KEYS)}
  check(k["algorithm"] in PACKING_ALGORITHMS, "data.packing.algorithm", k["algorithm"],
        f"must be one of {list(PACKING_ALGORITHMS)}")
  check(is_int(k["bins"]) and k["bins"] >= 0, "data.packing.bins", k["bins"],
        "must be an integer >= 0 (0: the host-local batch size)")
  for key in ("shuffle_bins", "split_long"):
    check(isinstance(k[key], bool), f"data.packing.{key}", k[key], "must be true or false")
  return DataSpec(vocab=c["vocab"], seq_len=int(c["seq_len"]), seed=int(c["seed"]),
                  budget=c["budget"], sources=sources, phases=tuple(phases),
                  pause_ratio=float(p["ratio"]), pause_in_eval=p["in_eval"], packing=k,
                  read_threads=int(c["read_threads"]),
                  prefetch_batches=int(c["prefetch_batches"]))


# What the pipeline's functions take: a DataSpec (a run passes its Experiment's, validated once)
# or a raw `data` section, validated on the spot (scripts, tests, stored configs).
DataConfig = DataSpec | ml_collections.ConfigDict | Mapping[str, Any]


def as_spec(data: DataConfig) -> DataSpec:
  """`data` itself when it is a DataSpec, else the validated section."""
  return data if isinstance(data, DataSpec) else validate_data_config(data)


def source_names(data: DataConfig) -> list[str]:
  """Source names in `source_id` order (for per-source metrics)."""
  return list(as_spec(data).source_names)


def eval_source_names(data: DataConfig) -> list[str]:
  """Sources with a held-out split, i.e. the keys of `pipeline.make_eval_iterators`."""
  spec = as_spec(data)
  return [n for n in spec.source_names if sources_lib.has_eval_split(spec.sources[n])]


def total_train_steps(data: DataConfig, train_steps: int) -> int:
  """Steps the trainer runs for a semantic budget of `train_steps`.

  additive:     train_steps + the warm-up phases' steps (procedural data on top of the budget)
  substitutive: train_steps (the warm-up phases replace the first part of the budget)
  """
  spec = as_spec(data)
  check(is_int(train_steps) and train_steps > 0, "train.steps", train_steps,
        "must be a positive integer")
  if spec.budget == "additive":
    return int(train_steps) + spec.warmup_steps
  check(spec.warmup_steps < train_steps, "data.budget", spec.budget,
        f"substitutive warm-up phases take {spec.warmup_steps} steps, which leaves none of "
        f"train.steps = {train_steps} for the last phase")
  return int(train_steps)
