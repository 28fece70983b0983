"""Document sources of the pipeline: one config section `data.sources.<name>` -> a random-access
source of raw records plus the function that turns a record into a token example.

Kinds and their keys (`source_config(kind)` gives a section with every key at its default):
  every kind     kind, pause (whether pause insertion at data.pause.ratio applies: true, false,
                 or None, the default: by kind. On for text, jsonl, array_record, tfds with a
                 text or thoughts layout, math and thoughts; off for procedural data (tfds
                 layout 'procedural' too), since neither the pause nor the procedural paper puts
                 pauses into it, and for finetune, whose examples carry their own)
  text           path ('' = the shipped data/shakespeare.txt), delimiter (a regex between
                 documents; default: blank lines), eval_fraction (held-out tail of the documents)
  jsonl          path, field (the text key of each JSON object), on_error ('raise' | 'skip': a
                 malformed line raises naming file and line, or is skipped and counted),
                 eval_fraction
  array_record   path (a file, a glob or comma-separated files), field ('' = each record is
                 UTF-8 text; else each record is a JSON object and this is its text key),
                 eval_fraction
  tfds           name, split, eval_split ('' = none), data_dir ('' = the TFDS default), field;
                 read with `tfds.data_source` (random access, no TensorFlow); layout 'text'
                 (a text `field`), or 'procedural' / 'thoughts' for datasets built by
                 tfds_builders.py (with prior_prob for thoughts)
  math           the synthetic math corpus (math_corpus.MathCorpusConfig keys, e.g. seed,
                 train_size, kinds), thoughts (bool: thought-augmented layout, else raw text),
                 prior_prob; the eval split is the corpus's validation split
  thoughts       path (thought-record JSONL, see thoughts.py), prior_prob, eval_fraction
  procedural     task, seed, num_items, eval_items and the task's own parameters (e.g. k,
                 length); the eval split is drawn with seed + EVAL_SEED_OFFSET
  finetune       prompt -> target pairs for pause finetuning (PauseFT, METHODS.md §2.1):
                 generator ('jsonl' | 'math' | 'procedural'), num_pauses (M_ft, the pauses
                 between prompt and target; 0 = standard finetuning, StdFT), and the keys of
                 the generator, which follow the kind of the same name:
                   jsonl       path, prompt_field ('prompt'), target_field ('target'), on_error,
                               eval_fraction
                   math        the math corpus keys: question -> answer_text (`123*45=` ->
                               `5535`); the eval split is the corpus's validation split
                   procedural  task, seed, num_items, eval_items, task parameters: the tokens
                               before an item's output span (its loss mask) -> the span;
                               the padding after it is dropped
                 Pause insertion never applies to it (pause must stay None or false).

Token examples are dicts of int32 arrays 'tokens' and 'loss_mask' (1 = the token is a target).
Natural text is `bos text eos` with loss everywhere (as BoLT and MaxText); thought documents use
thoughts.format_thought_document; procedural items keep their own loss masks, their task-local
symbols mapped to global ids by `Vocabulary.procedural_id`, and get no bos/eos (the packer's
segment ids separate items). Finetune pairs are `bos prompt <pause>*M target eos` (procedural
pairs: `prompt <pause>*M target` in mapped symbols, no bos/eos), laid out by
pause.pause_finetune_example with the loss on the target (and eos) only; prompt and target are
tokenized separately. Every example is checked against the vocabulary size.

`open_source` opens a split through its kind's entry of one table of openers (`_OPENERS`).

Not here: shuffling, pause insertion, per-host slicing (streams.py), mixing and packing
(pipeline.py).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import grain
import ml_collections
import numpy as np

from ponder_jax.data import data_dir, math_corpus, procedural, tfds_records, thoughts
from ponder_jax.data import pause as pause_lib
from ponder_jax.data.vocab import Vocabulary
from ponder_jax.validation import ConfigError, check

SPLITS = ("train", "eval")
TFDS_LAYOUTS = ("text",) + tfds_records.LAYOUTS  # the others: datasets of tfds_builders.py
ON_ERROR = ("raise", "skip")
EVAL_SEED_OFFSET = 2**32  # procedural eval items: seed + this, disjoint from any train seed
SHIPPED_TEXT = "shakespeare.txt"

FINETUNE_GENERATORS = ("jsonl", "math", "procedural")
# M_ft: the pause paper tries 10 and 50 per task and reports the better; 10 is GSM8k's best.
DEFAULT_FINETUNE_PAUSES = 10

_COMMON = {"kind": "", "pause": None}
_MATH_KEYS = {f.name: f.default for f in dataclasses.fields(math_corpus.MathCorpusConfig)}
_PROCEDURAL_KEYS = {"task": "", "seed": 0, "num_items": procedural.DEFAULT_NUM_ITEMS,
                    "eval_items": 1024}
_KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "text": {"path": "", "delimiter": r"\n\s*\n", "eval_fraction": 0.05},
    "jsonl": {"path": "", "field": "text", "on_error": "raise", "eval_fraction": 0.05},
    "array_record": {"path": "", "field": "", "eval_fraction": 0.05},
    "tfds": {"name": "", "split": "train", "eval_split": "", "data_dir": "", "field": "text",
             "layout": "text", "prior_prob": 0.5},
    "math": {**_MATH_KEYS, "thoughts": True, "prior_prob": 0.5},
    "thoughts": {"path": "", "prior_prob": 0.5, "eval_fraction": 0.05},
    "procedural": _PROCEDURAL_KEYS,
    "finetune": {"generator": "jsonl", "num_pauses": DEFAULT_FINETUNE_PAUSES},
}
KINDS = tuple(_KIND_DEFAULTS)
# A finetune section's keys beyond its own depend on its generator.
_FINETUNE_GENERATOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "jsonl": {"path": "", "prompt_field": "prompt", "target_field": "target",
              "on_error": "raise", "eval_fraction": 0.05},
    "math": _MATH_KEYS,
    "procedural": _PROCEDURAL_KEYS,
}


def _defaults(kind: str, generator: Any = None) -> dict[str, Any]:
  """Every key of a `kind` section at its default (a finetune section's, for `generator`)."""
  defaults = {**_COMMON, **_KIND_DEFAULTS[kind], "kind": kind}
  if kind == "finetune":
    defaults["generator"] = generator or defaults["generator"]
    defaults.update(_FINETUNE_GENERATOR_DEFAULTS.get(defaults["generator"], {}))
  return defaults


def _role(kind: str, options: Mapping[str, Any]) -> str:
  """The kind whose keys a section's options follow: a finetune section's generator."""
  if kind == "finetune":
    return options.get("generator", _KIND_DEFAULTS["finetune"]["generator"])
  return kind


def _pauses_by_default(kind: str, options: Mapping[str, Any]) -> bool:
  """What pause = None means: insertion into natural-text, math and thought documents only."""
  return kind not in ("procedural", "finetune") and options.get("layout") != "procedural"


def shipped_text_path() -> str:
  """The repository's data/shakespeare.txt (the natural-text default)."""
  return str(data_dir() / SHIPPED_TEXT)


def source_config(kind: str, **overrides: Any) -> ml_collections.ConfigDict:
  """A `data.sources.<name>` section of `kind` with every key at its default, then `overrides`.

  Procedural task parameters (e.g. `k=16`) are not known here; pass them as overrides.
  """
  if kind not in _KIND_DEFAULTS:
    raise ConfigError("kind", kind, f"unknown source kind; known kinds are {list(KINDS)}")
  generator = overrides.get("generator")
  if kind == "finetune" and generator is not None and generator not in FINETUNE_GENERATORS:
    raise ConfigError("generator", generator, f"must be one of {FINETUNE_GENERATORS}")
  section = _defaults(kind, generator)
  task_params = _role(kind, section) == "procedural"
  for key, value in overrides.items():
    if key not in section and not task_params:
      raise ConfigError(key, value, f"unknown key of a {kind} source; known keys are "
                        f"{sorted(section)}")
    section[key] = value
  if section["pause"] is None:
    # Typed, so that `--config.data.sources.<name>.pause=true` parses (ml_collections cannot
    # override a plain None); a new reference per section, so no two sections share one.
    section["pause"] = ml_collections.FieldReference(None, field_type=bool)
  return ml_collections.ConfigDict(section)


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """A validated `data.sources.<name>` section; `pause` is resolved (None -> by kind)."""
  name: str
  kind: str
  pause: bool
  options: Mapping[str, Any]

  @property
  def key(self) -> str:
    return f"data.sources.{self.name}"


def section_dict(section: Any) -> dict[str, Any]:
  """A config section (ConfigDict or mapping) as a plain dict."""
  if isinstance(section, ml_collections.ConfigDict):
    return section.to_dict()
  return dict(section or {})


def validate_source(name: str, section: Mapping[str, Any]) -> SourceSpec:
  """Checks kind, keys, types and that named files exist; opens no data."""
  prefix = f"data.sources.{name}"
  section = section_dict(section)
  kind = section.get("kind", "")
  check(kind in _KIND_DEFAULTS, f"{prefix}.kind", kind,
        f"unknown source kind; known kinds are {list(KINDS)}")
  role = _role(kind, section)
  if kind == "finetune":
    check(role in FINETUNE_GENERATORS, f"{prefix}.generator", role,
          f"must be one of {FINETUNE_GENERATORS}")
  defaults = _defaults(kind, role if kind == "finetune" else None)
  if role != "procedural":  # task parameters are checked by procedural.make_procedural_source
    for key in section:
      check(key in defaults, f"{prefix}.{key}", section[key],
            f"unknown key of a {kind} source; known keys are {sorted(defaults)}")
  options = {**defaults, **section}
  pause = options.pop("pause")
  options.pop("kind")
  check(pause is None or isinstance(pause, bool), f"{prefix}.pause", pause,
        "must be true, false or None (None: by kind)")
  if kind == "finetune":
    check(not pause, f"{prefix}.pause", pause, "pause insertion never applies to a finetune "
          "source; its num_pauses sets the pauses between prompt and target")
    m = options["num_pauses"]
    check(isinstance(m, int) and not isinstance(m, bool) and m >= 0, f"{prefix}.num_pauses",
          m, "must be an integer >= 0 (0: standard finetuning)")
  if pause is None:
    pause = _pauses_by_default(kind, options)
  if "eval_fraction" in options:
    frac = options["eval_fraction"]
    check(isinstance(frac, (int, float)) and 0.0 <= frac < 1.0, f"{prefix}.eval_fraction",
          frac, "must lie in [0, 1)")
  if "prior_prob" in options:
    p = options["prior_prob"]
    check(isinstance(p, (int, float)) and 0.0 <= p <= 1.0, f"{prefix}.prior_prob", p,
          "must be a probability in [0, 1]")
  if role in ("jsonl", "thoughts", "array_record") or (kind == "text" and options["path"]):
    check(bool(options["path"]), f"{prefix}.path", options["path"],
          f"a {kind} source needs a path")
    check(bool(_expand_paths(options["path"])), f"{prefix}.path", options["path"],
          "no such file")
  if kind == "text" and not options["path"]:
    check(os.path.isfile(shipped_text_path()), f"{prefix}.path", "",
          f"the shipped text {shipped_text_path()} is missing (installed without the "
          "repository? set $PONDER_JAX_DATA_DIR or give a path)")
  if kind == "text":
    try:
      re.compile(options["delimiter"])
    except (re.error, TypeError) as e:
      raise ConfigError(f"{prefix}.delimiter", options["delimiter"],
                        f"not a regular expression ({e})") from None
    check(bool(options["delimiter"]), f"{prefix}.delimiter", options["delimiter"],
          "must not be empty")
  if role == "jsonl":
    check(options["on_error"] in ON_ERROR, f"{prefix}.on_error", options["on_error"],
          f"must be one of {ON_ERROR}")
    for key in ("field",) if kind == "jsonl" else ("prompt_field", "target_field"):
      check(isinstance(options[key], str) and bool(options[key]), f"{prefix}.{key}",
            options[key], "must name a key")
  if kind == "tfds":
    check(bool(options["name"]), f"{prefix}.name", options["name"],
          "a tfds source needs a dataset name")
    check(bool(options["field"]), f"{prefix}.field", options["field"], "must name a feature")
    check(options["layout"] in TFDS_LAYOUTS, f"{prefix}.layout", options["layout"],
          f"must be one of {TFDS_LAYOUTS}")
    check(not options["data_dir"] or os.path.isdir(options["data_dir"]), f"{prefix}.data_dir",
          options["data_dir"], "is not a directory")
  if kind == "math":
    check(isinstance(options["thoughts"], bool), f"{prefix}.thoughts", options["thoughts"],
          "must be true or false")
  if role == "math":
    math_corpus.MathCorpusConfig.from_config(_math_section(options), prefix)
  if role == "procedural":
    check(bool(options["task"]), f"{prefix}.task", options["task"],
          "a procedural source needs a task")
    for key in ("num_items", "eval_items"):
      check(isinstance(options[key], int) and options[key] > 0, f"{prefix}.{key}",
            options[key], "must be a positive integer")
    check(isinstance(options["seed"], int) and 0 <= options["seed"] < EVAL_SEED_OFFSET,
          f"{prefix}.seed", options["seed"], f"must be an integer in [0, {EVAL_SEED_OFFSET})")
    # Builds (cheaply: items are generated on access) to check the task and its parameters.
    _procedural_source(name, options, "train")
  return SourceSpec(name=name, kind=kind, pause=pause, options=options)


def _math_section(options: Mapping[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in options.items() if k in _MATH_KEYS}


def _procedural_source(name: str, options: Mapping[str, Any],
                       split: str) -> procedural.ProceduralSource:
  params = {k: v for k, v in options.items()
            if k not in _PROCEDURAL_KEYS and k not in _KIND_DEFAULTS["finetune"]}
  train = split == "train"
  return procedural.make_procedural_source(
      options["task"], options["seed"] + (0 if train else EVAL_SEED_OFFSET),
      options["num_items"] if train else options["eval_items"],
      config_key=f"data.sources.{name}", **params)


def _expand_paths(pattern: str) -> list[str]:
  paths = []
  for part in str(pattern).split(","):
    part = os.path.expanduser(part.strip())
    if any(c in part for c in "*?["):
      paths += sorted(glob.glob(part))
    elif os.path.exists(part):
      paths.append(part)
  return paths


# Record sources ----------------------------------------------------------------------------------


class _Range:
  """Records [start, stop) of a random-access source, re-indexed from 0."""

  def __init__(self, base: Any, start: int, stop: int):
    self.base, self.start, self.stop = base, start, stop

  def __len__(self) -> int:
    return self.stop - self.start

  def __getitem__(self, index: int) -> Any:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} records")
    return self.base[self.start + index]


def _split_tail(records: Any, spec: SourceSpec, split: str) -> Any:
  """Train: all but the held-out tail (eval_fraction of the records); eval: the tail."""
  n = len(records)
  num_eval = math.ceil(spec.options["eval_fraction"] * n)
  check(n - num_eval > 0, f"{spec.key}.eval_fraction", spec.options["eval_fraction"],
        f"leaves no training documents out of {n}")
  return _Range(records, 0, n - num_eval) if split == "train" else _Range(records, n - num_eval, n)


def _read_text(path: str, key: str) -> str:
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except UnicodeDecodeError as e:
    raise ValueError(f"{key}: {path} is not UTF-8 text ({e})") from None


def _text_documents(spec: SourceSpec) -> list[str]:
  path = spec.options["path"] or shipped_text_path()
  text = _read_text(path, spec.key)
  return [doc.strip() for doc in re.split(spec.options["delimiter"], text) if doc.strip()]


@dataclasses.dataclass
class JsonlReport:
  """What reading a JSONL source skipped (on_error = 'skip')."""
  skipped: int = 0
  first_error: str = ""


def read_jsonl_fields(path: str, fields: Sequence[str], *, on_error: str = "raise",
                      report: JsonlReport | None = None) -> list[tuple[str, ...]]:
  """The `fields` strings of each JSON line of `path`, as a tuple per line. A malformed line
  (bad JSON, not an object, a missing or non-string field) raises ValueError naming file and
  line, or with on_error='skip' is counted in `report` and left out. Blank lines are ignored."""
  rows = []
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        if not isinstance(record, dict):
          raise ValueError("not a JSON object")
        for field in fields:
          if field not in record:
            raise ValueError(f"missing field '{field}'")
          if not isinstance(record[field], str):
            raise ValueError(f"field '{field}' is {type(record[field]).__name__}, not a string")
      except ValueError as e:  # json.JSONDecodeError is a ValueError
        message = f"{path}:{line_no}: {e}"
        if on_error == "raise":
          raise ValueError(message) from None
        if report is not None:
          report.skipped += 1
          report.first_error = report.first_error or message
        continue
      rows.append(tuple(record[field] for field in fields))
  return rows


def read_jsonl_texts(path: str, field: str, *, on_error: str = "raise",
                     report: JsonlReport | None = None) -> list[str]:
  """The `field` string of each JSON line of `path` (see `read_jsonl_fields`)."""
  return [text for text, in read_jsonl_fields(path, (field,), on_error=on_error, report=report)]


class _ArrayRecordTexts:
  """Random access to the texts of ArrayRecord files (UTF-8 records, or JSON with a field)."""

  def __init__(self, paths: Sequence[str], field: str, key: str):
    self._source = grain.sources.ArrayRecordDataSource(list(paths))
    self._paths, self._field, self._key = list(paths), field, key

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> str:
    raw = self._source[int(index)]
    try:
      text = raw.decode("utf-8")
      if self._field:
        record = json.loads(text)
        text = record[self._field]
        if not isinstance(text, str):
          raise ValueError(f"field '{self._field}' is {type(text).__name__}, not a string")
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"{self._key}: record {index} of {self._paths} is malformed: "
                       f"{type(e).__name__}: {e}") from None
    return text


class _TfdsTexts:
  """Random access to one text feature of a TFDS split through `tfds.data_source`."""

  def __init__(self, spec: SourceSpec, split: str):
    # Lazy: tensorflow_datasets is the optional `interop` extra; only tfds sources need it.
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    o = spec.options
    self._field, self._key = o["field"], spec.key
    self._source = tfds.data_source(o["name"], split=split, data_dir=o["data_dir"] or None)
    if len(self._source):
      self[0]  # a wrong field fails here, at start, not mid-training

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> str:
    record = self._source[int(index)]
    if self._field not in record:
      raise ConfigError(f"{self._key}.field", self._field,
                        f"not a feature of the records (features: {sorted(record)})")
    value = record[self._field]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# Token sources -----------------------------------------------------------------------------------


class TokenSource:
  """Random access to the raw records of one split of one source, and their token examples.

  `source[i]` is `(i, record)`; `example((i, record), rng)` is its token example (rng drives the
  thought form of each chunk; other kinds ignore it and accept None). `num_skipped` counts records
  left out by on_error = 'skip', `first_skipped` says where the first one was and why.
  """

  def __init__(self, spec: SourceSpec, split: str, records: Any,
               to_tokens: Callable[[Any, np.random.Generator], dict[str, np.ndarray]],
               vocab_size: int, describe: Callable[[int], str], num_skipped: int = 0,
               first_skipped: str = ""):
    self.spec, self.split, self.name = spec, split, spec.name
    self._records, self._to_tokens = records, to_tokens
    self._vocab_size, self._describe = vocab_size, describe
    self.num_skipped, self.first_skipped = num_skipped, first_skipped

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> tuple[int, Any]:
    index = int(index)
    return index, self._records[index]

  def __repr__(self) -> str:
    return f"TokenSource({self.spec.key}, kind={self.spec.kind}, split={self.split}, n={len(self)})"

  def example(self, indexed_record: tuple[int, Any],
              rng: np.random.Generator | None) -> dict[str, np.ndarray]:
    index, record = indexed_record
    example = self._to_tokens(record, rng)
    tokens = example["tokens"]
    if tokens.size and (tokens.max() >= self._vocab_size or tokens.min() < 0):
      bad = int(tokens.max() if tokens.max() >= self._vocab_size else tokens.min())
      raise ValueError(f"{self.spec.key} ({self._describe(index)}): token id {bad} is outside "
                       f"the vocabulary [0, {self._vocab_size})")
    return example


def _text_example(vocab: Vocabulary) -> Callable[[str, np.random.Generator], dict]:
  bos, eos = vocab.bos_id, vocab.eos_id

  def to_tokens(text: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    del rng
    tokens = np.asarray([bos, *vocab.encode(text), eos], np.int32)
    return {"tokens": tokens, "loss_mask": np.ones_like(tokens)}

  return to_tokens


def _thought_example(vocab: Vocabulary, prior_prob: float):
  def to_tokens(chunks, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return thoughts.format_thought_document(chunks, vocab, rng, prior_prob=prior_prob)

  return to_tokens


def _check_nonempty(records: Any, spec: SourceSpec, split: str) -> None:
  if len(records) == 0:  # pylint: disable=g-explicit-length-test
    key = {"tfds": "split" if split == "train" else "eval_split", "math": f"{split}_size",
           "procedural": "num_items"}.get(_role(spec.kind, spec.options), "path")
    value = spec.options.get(key, spec.options.get("path", ""))
    raise ConfigError(f"{spec.key}.{key}", value or "(shipped text)",
                      f"the {split} split of source '{spec.name}' holds no documents")


def has_eval_split(spec: SourceSpec) -> bool:
  o = spec.options
  if spec.kind == "tfds":
    return bool(o["eval_split"])
  if "eval_fraction" in o:
    return o["eval_fraction"] > 0
  return True  # math: validation split; procedural: fresh seed


def open_source(spec: SourceSpec, vocab: Vocabulary, split: str = "train") -> TokenSource:
  """Opens one split of a validated source with its kind's opener (`_OPENERS`). Raises
  ConfigError (naming the key) on an empty source, a vocabulary too small for a procedural task,
  or a split with no held-out part."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if split == "eval" and not has_eval_split(spec):
    raise ConfigError(f"{spec.key}.eval_fraction" if "eval_fraction" in spec.options else
                      f"{spec.key}.eval_split", 0, f"source '{spec.name}' has no eval split")
  report = JsonlReport()
  opened = _OPENERS[spec.kind](spec, vocab, split, report)
  _check_nonempty(opened.records, spec, split)
  return TokenSource(spec, split, opened.records, opened.to_tokens, vocab.vocab_size,
                     opened.describe, report.skipped, report.first_error)


class _Opened(NamedTuple):
  """What a kind's opener returns: the split's records and how to read them."""
  records: Any  # random access: len() and [i]
  to_tokens: Callable[[Any, np.random.Generator], dict[str, np.ndarray]]
  describe: Callable[[int], str]  # record index -> where it came from, for error messages


# An opener: (spec, vocab, split, report of skipped JSONL lines) -> the opened split.
_Opener = Callable[[SourceSpec, Vocabulary, str, JsonlReport], _Opened]


def _held_out(records: Any, spec: SourceSpec, split: str) -> Any:
  """The split of a source whose held-out part is the tail of its records (eval_fraction)."""
  _check_nonempty(records, spec, "train")
  return _split_tail(records, spec, split)


def _open_text(spec: SourceSpec, vocab: Vocabulary, split: str, report: JsonlReport) -> _Opened:
  del report
  path = spec.options["path"] or SHIPPED_TEXT
  return _Opened(_held_out(_text_documents(spec), spec, split), _text_example(vocab),
                 lambda i: f"{path} document {i}")


def _open_jsonl(spec: SourceSpec, vocab: Vocabulary, split: str, report: JsonlReport) -> _Opened:
  o = spec.options
  records = []
  for file in _expand_paths(o["path"]):
    records += read_jsonl_texts(file, o["field"], on_error=o["on_error"], report=report)
  return _Opened(_held_out(records, spec, split), _text_example(vocab),
                 lambda i: f"{o['path'] or spec.kind} document {i}")


def _open_array_record(spec: SourceSpec, vocab: Vocabulary, split: str,
                       report: JsonlReport) -> _Opened:
  del report
  path = spec.options["path"]
  records = _ArrayRecordTexts(_expand_paths(path), spec.options["field"], spec.key)
  return _Opened(_held_out(records, spec, split), _text_example(vocab),
                 lambda i: f"{path} record {i}")


def _open_tfds(spec: SourceSpec, vocab: Vocabulary, split: str, report: JsonlReport) -> _Opened:
  """A text field of any TFDS dataset, or a procedural / thoughts dataset of tfds_builders.py."""
  del report
  o = spec.options
  tfds_split = o["split"] if split == "train" else o["eval_split"]
  describe = lambda i: f"tfds {o['name']} record {i}"  # noqa: E731
  if o["layout"] == "text":
    return _Opened(_TfdsTexts(spec, tfds_split), _text_example(vocab), describe)
  records = tfds_records.TfdsRecords(
      o["name"], tfds_split, data_dir=o["data_dir"], layout=o["layout"], key=spec.key,
      split_key="split" if split == "train" else "eval_split")
  if o["layout"] == "thoughts":
    return _Opened(records, _thought_example(vocab, o["prior_prob"]), describe)
  if records.num_symbols > vocab.num_procedural:
    raise ConfigError(f"{spec.key}.name", o["name"],
                      f"needs {records.num_symbols} procedural symbols but the vocabulary "
                      f"reserves {vocab.num_procedural}")
  return _Opened(records, _procedural_example(vocab), describe)


def _open_thoughts(spec: SourceSpec, vocab: Vocabulary, split: str,
                   report: JsonlReport) -> _Opened:
  del report
  path = spec.options["path"]
  doc_ids, documents = [], []
  for file in _expand_paths(path):
    ids, docs = thoughts.read_thought_records(file)
    doc_ids += ids
    documents += docs
  records = _held_out(documents, spec, split)
  return _Opened(records, _thought_example(vocab, spec.options["prior_prob"]),
                 lambda i: f"{path} doc_id {doc_ids[records.start + i]!r}")


def _open_math(spec: SourceSpec, vocab: Vocabulary, split: str, report: JsonlReport) -> _Opened:
  del report
  o = spec.options
  records = _MathRecords(spec, split, "chunks" if o["thoughts"] else "text")
  to_tokens = _thought_example(vocab, o["prior_prob"]) if o["thoughts"] else _text_example(vocab)
  return _Opened(records, to_tokens, lambda i: f"math corpus {records.split} item {i}")


def _open_procedural(spec: SourceSpec, vocab: Vocabulary, split: str,
                     report: JsonlReport) -> _Opened:
  del report
  return _Opened(_procedural_records(spec, vocab, split), _procedural_example(vocab),
                 lambda i: f"{spec.options['task']} item {i}")


def _open_finetune(spec: SourceSpec, vocab: Vocabulary, split: str,
                   report: JsonlReport) -> _Opened:
  """Prompt -> target pairs from the section's generator (jsonl | math | procedural)."""
  o = spec.options
  num_pauses = o["num_pauses"]
  if o["generator"] == "jsonl":
    records = []
    for file in _expand_paths(o["path"]):
      records += read_jsonl_fields(file, (o["prompt_field"], o["target_field"]),
                                   on_error=o["on_error"], report=report)
    return _Opened(_held_out(records, spec, split), _finetune_text_example(vocab, num_pauses),
                   lambda i: f"{o['path'] or spec.kind} document {i}")
  if o["generator"] == "math":
    records = _MathRecords(spec, split, "pair")
    return _Opened(records, _finetune_text_example(vocab, num_pauses),
                   lambda i: f"math corpus {records.split} item {i}")
  return _Opened(_procedural_records(spec, vocab, split),
                 _finetune_procedural_example(vocab, num_pauses, spec.key),
                 lambda i: f"{o['task']} item {i}")


# One opener per kind (MaxText's per-kind input pipelines): a new kind is a `_KIND_DEFAULTS`
# entry, its validation, and one entry here.
_OPENERS: dict[str, _Opener] = {
    "text": _open_text,
    "jsonl": _open_jsonl,
    "array_record": _open_array_record,
    "tfds": _open_tfds,
    "math": _open_math,
    "thoughts": _open_thoughts,
    "procedural": _open_procedural,
    "finetune": _open_finetune,
}


class _MathRecords:
  """A math-corpus split (train; eval = the corpus's validation split) as thought documents
  (form 'chunks'), raw texts ('text') or (question, answer_text) finetune pairs ('pair')."""

  def __init__(self, spec: SourceSpec, split: str, form: str):
    config = math_corpus.MathCorpusConfig.from_config(_math_section(spec.options), spec.key)
    self._corpus = math_corpus.MathCorpus(config, "train" if split == "train" else "validation",
                                          prefix=spec.key)
    self._form, self.split = form, self._corpus.split

  def __len__(self) -> int:
    return len(self._corpus)

  def __getitem__(self, index: int):
    record = self._corpus[index]
    if self._form == "chunks":
      return [tuple(chunk) for chunk in record["chunks"]]
    if self._form == "pair":
      return record["question"], record["answer_text"]
    return record["text"]


def _procedural_records(spec: SourceSpec, vocab: Vocabulary,
                        split: str) -> procedural.ProceduralSource:
  source = _procedural_source(spec.name, spec.options, split)
  if source.num_symbols > vocab.num_procedural:
    raise ConfigError(f"{spec.key}.task", spec.options["task"],
                      f"needs {source.num_symbols} procedural symbols but the vocabulary "
                      f"reserves {vocab.num_procedural}")
  return source


def _procedural_example(vocab: Vocabulary):
  def to_tokens(item: Mapping[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    del rng
    tokens = np.asarray(vocab.procedural_id(np.asarray(item["tokens"])), np.int32)
    return {"tokens": tokens, "loss_mask": np.asarray(item["loss_mask"], np.int32)}

  return to_tokens


def _finetune_text_example(vocab: Vocabulary, num_pauses: int):
  """(prompt, target) texts -> `bos prompt <pause>*M target eos`, loss on target and eos."""
  bos, eos = vocab.bos_id, vocab.eos_id

  def to_tokens(pair: tuple[str, str], rng: np.random.Generator) -> dict[str, np.ndarray]:
    del rng
    prompt, target = pair
    return pause_lib.pause_finetune_example([bos, *vocab.encode(prompt)],
                                            [*vocab.encode(target), eos],
                                            num_pauses=num_pauses, pause_id=vocab.pause_id)

  return to_tokens


def _finetune_procedural_example(vocab: Vocabulary, num_pauses: int, key: str):
  """A procedural item -> `input <pause>*M output` in global ids: the output is the item's loss
  span (first to last target; every task's is contiguous), the input everything before it, and
  the padding after it, never a target, is dropped."""

  def to_tokens(item: Mapping[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    del rng
    targets = np.flatnonzero(np.asarray(item["loss_mask"]))
    if not targets.size or targets[-1] - targets[0] + 1 != targets.size:
      raise ValueError(f"{key}: a procedural item's loss mask must mark one contiguous output "
                       f"span to make a finetune pair, got targets at {targets.tolist()}")
    ids = np.asarray(vocab.procedural_id(np.asarray(item["tokens"])), np.int32)
    return pause_lib.pause_finetune_example(ids[:targets[0]], ids[targets[0]:targets[-1] + 1],
                                            num_pauses=num_pauses, pause_id=vocab.pause_id)

  return to_tokens
