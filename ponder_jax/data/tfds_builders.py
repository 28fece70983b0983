"""TFDS builders (ArrayRecord files) for the project's generated data.

A builder is a thin wrapper over a native source: it takes a `data.sources.<name>` section (see
sources.py), writes what that source yields, record for record and in index order, and stores
the section's data-defining options in the dataset's metadata. `build(section, data_dir)` writes
the dataset once; any process then reads it with `tfds.data_source` (random access, no
TensorFlow, no import of this module needed):

  ponder_procedural/<config>  kind procedural. Splits: train (num_items items from seed) and
                              validation (eval_items items from seed + sources.EVAL_SEED_OFFSET,
                              the pipeline's eval split). Features: tokens, loss_mask (int32,
                              task-local symbols as the generator yields them; the vocabulary
                              maps them to ids at read time, as natively).
  ponder_math/<config>        kind math: the synthetic math corpus. Splits: train, validation,
                              test (each needs a fixed size). Features: kind, question, answer,
                              answer_text, thought, text (question + answer_text) and chunks
                              {text, thought} ('' = no thought).
  ponder_thoughts/<config>    kind thoughts: thought-record JSONL. Splits: train and validation
                              (the pipeline's held-out tail, eval_fraction). Features: text (the
                              whole document) and chunks {text, thought} ('' = no thought).

Record i of a split is item i of the native split (`disable_shuffling`), so a built dataset and
its generator give the same tokens for the same seed. The pipeline's `tfds` kind reads the `text`
feature of math and thought datasets as natural text as it is; the other layouts are read
back as native records by tfds_records.py.

Not here: generators (procedural.py, math_corpus.py, thoughts.py), tokenization (sources.py),
reading built datasets (tfds_records.py), seqio (seqio_tasks.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any, ClassVar, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

from ponder_jax.data import math_corpus, procedural, sources
from ponder_jax.data.vocab import ByteVocabulary
from ponder_jax.validation import check

VERSION = "1.0.0"
# Procedural sources and the math corpus default to unbounded streams; a build writes every item,
# so it needs an explicit size, and this bounds a typo (2**31 items would take days).
MAX_BUILD_ITEMS = 10**8
_CONFIG_NAME = re.compile(r"\w[\w.-]*")  # a directory name; TFDS parses / : , = in dataset names
_MATH_KEYS = tuple(f.name for f in dataclasses.fields(math_corpus.MathCorpusConfig))
_CHUNKS = tfds.features.Sequence({"text": tfds.features.Text(), "thought": tfds.features.Text()})


@dataclasses.dataclass(eq=False)
class SourceBuilderConfig(tfds.core.BuilderConfig):
  """The validated source a builder writes (`spec`) and its data-defining options (`identity`,
  stored as the dataset's metadata: a later build under the same name must match it)."""
  spec: sources.SourceSpec | None = None
  identity: dict[str, Any] = dataclasses.field(default_factory=dict)


class _SourceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes the splits of one native source. Builders stay out of the TFDS registry: readers
  find the dataset by its files, the same way whether or not this module is imported."""

  VERSION = tfds.core.Version(VERSION)
  kind: ClassVar[str]

  def _features(self) -> dict[str, tfds.features.FeatureConnector]:
    raise NotImplementedError

  def _splits(self) -> dict[str, Any]:
    """{TFDS split name: random-access native records}."""
    raise NotImplementedError

  def _example(self, record: Any) -> dict[str, Any]:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict(self._features()),
        disable_shuffling=True,  # record i of a split is native item i
        metadata=tfds.core.MetadataDict(self.builder_config.identity))

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[int, dict]]]:
    del dl_manager  # everything is generated locally
    return {split: self._generate_examples(records) for split, records in self._splits().items()}

  def _generate_examples(self, records: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    for index in range(len(records)):
      yield index, self._example(records[index])


def _native_records(spec: sources.SourceSpec, split: str) -> Any:
  """The records `open_source` yields for a split ('train' | 'eval'): the one place that maps a
  section to its records. Its vocabulary only tokenizes, which a build never does; the byte
  vocabulary reserves all 256 procedural symbols, so it rejects no task."""
  return _Records(sources.open_source(spec, ByteVocabulary(), split))


class _Records:
  """The records of a TokenSource without their indices."""

  def __init__(self, source: sources.TokenSource):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> Any:
    return self._source[index][1]


def _chunk_features(chunks: Any) -> dict[str, list[str]]:
  return {"text": [text for text, _ in chunks], "thought": [thought or "" for _, thought in chunks]}


class PonderProcedural(_SourceBuilder, skip_registration=True):
  """A procedural task; see the module docstring."""
  name = "ponder_procedural"
  kind = "procedural"

  def _features(self):
    return {"tokens": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "loss_mask": tfds.features.Tensor(shape=(None,), dtype=np.int32)}

  def _splits(self):
    spec = self.builder_config.spec
    return {"train": _native_records(spec, "train"), "validation": _native_records(spec, "eval")}

  def _example(self, record):
    return {"tokens": record["tokens"], "loss_mask": record["loss_mask"]}


class PonderMath(_SourceBuilder, skip_registration=True):
  """The synthetic math corpus; see the module docstring."""
  name = "ponder_math"
  kind = "math"

  def _features(self):
    text = {key: tfds.features.Text()
            for key in ("kind", "question", "answer", "answer_text", "thought", "text")}
    return {**text, "chunks": _CHUNKS}

  def _splits(self):
    spec = self.builder_config.spec
    config = _math_config(spec)
    return {split: math_corpus.MathCorpus(config, split, prefix=spec.key)
            for split in math_corpus.SPLITS}

  def _example(self, record):
    return {**{key: record[key] for key in
               ("kind", "question", "answer", "answer_text", "thought", "text")},
            "chunks": _chunk_features(record["chunks"])}


class PonderThoughts(_SourceBuilder, skip_registration=True):
  """Thought-augmented text from thought-record JSONL; see the module docstring."""
  name = "ponder_thoughts"
  kind = "thoughts"

  def _features(self):
    return {"text": tfds.features.Text(), "chunks": _CHUNKS}

  def _splits(self):
    spec = self.builder_config.spec
    splits = {"train": _native_records(spec, "train")}
    if spec.options["eval_fraction"] > 0:
      splits["validation"] = _native_records(spec, "eval")
    return splits

  def _example(self, record):
    return {"text": "".join(text for text, _ in record), "chunks": _chunk_features(record)}


BUILDERS: dict[str, type[_SourceBuilder]] = {
    cls.kind: cls for cls in (PonderProcedural, PonderMath, PonderThoughts)}


def _math_config(spec: sources.SourceSpec) -> math_corpus.MathCorpusConfig:
  return math_corpus.MathCorpusConfig.from_config(
      {key: spec.options[key] for key in _MATH_KEYS}, spec.key)


def _identity(spec: sources.SourceSpec) -> dict[str, Any]:
  """What decides a dataset's records: two builds with equal identities write the same data.
  Formatting options (pause, prior_prob, the math `thoughts` layout) do not enter it."""
  o = spec.options
  identity: dict[str, Any] = {"kind": spec.kind, "version": VERSION}
  if spec.kind == "procedural":
    identity["options"] = dict(o)
    # Derived, stored for readers: the vocabulary must reserve this many procedural symbols.
    identity["num_symbols"] = _procedural_source(o, spec.key).num_symbols
  elif spec.kind == "math":
    identity["options"] = {key: o[key] for key in _MATH_KEYS}
  else:  # the files' contents, not only their names, decide the records
    digest = hashlib.sha256()
    for split in ("train", "eval") if o["eval_fraction"] > 0 else ("train",):
      records = _native_records(spec, split)
      for index in range(len(records)):
        digest.update(json.dumps([split, records[index]]).encode("utf-8"))
    identity["options"] = {"path": o["path"], "eval_fraction": o["eval_fraction"]}
    identity["records_sha256"] = digest.hexdigest()
  # JSON form (tuples become lists), the form it is stored and compared in.
  return json.loads(json.dumps(identity))


def _procedural_source(options: Mapping[str, Any], key: str) -> procedural.ProceduralSource:
  """One item of the task of procedural `options`: only its alphabet is wanted."""
  params = {k: v for k, v in options.items()
            if k not in ("task", "seed", "num_items", "eval_items")}
  return procedural.make_procedural_source(options["task"], 0, 1, config_key=key, **params)


def _check_buildable(spec: sources.SourceSpec) -> None:
  o = spec.options
  if spec.kind == "procedural":
    for key in ("num_items", "eval_items"):
      check(o[key] <= MAX_BUILD_ITEMS, f"{spec.key}.{key}", o[key],
            f"a build writes every item; set the number to write (at most {MAX_BUILD_ITEMS})")
  elif spec.kind == "math":
    for split in math_corpus.SPLITS:
      size = o[f"{split}_size"]
      check(0 < size <= MAX_BUILD_ITEMS, f"{spec.key}.{split}_size", size,
            f"a build writes every problem; set the split's size (1 .. {MAX_BUILD_ITEMS}; 0, "
            "unbounded, cannot be written)")


def build(section: Any, data_dir: str | os.PathLike, *, name: str = "") -> str:
  """Builds the TFDS dataset of a `data.sources` section of kind procedural, math or thoughts
  into `data_dir` and returns its TFDS name, e.g. 'ponder_procedural/dyck', for
  `source_config('tfds', name=..., data_dir=...)` or `tfds_records.TfdsRecords`.

  `name` is the config name (default: the task for procedural, 'corpus' for math, the file's
  stem for thoughts). A dataset already built under that name is reused when it was built from
  the same data-defining options, and is an error otherwise (nothing is overwritten).
  Raises ConfigError naming `data.sources.<name>.<key>` for a bad section.
  """
  section = sources.section_dict(section)
  kind = section.get("kind", "")
  check(kind in BUILDERS, "kind", kind, f"no TFDS builder for this kind; buildable kinds are "
        f"{sorted(BUILDERS)}")
  if not name:
    name = {"procedural": str(section.get("task", "")), "math": "corpus",
            "thoughts": os.path.splitext(os.path.basename(str(section.get("path", ""))))[0]}[kind]
  check(bool(_CONFIG_NAME.fullmatch(name)), "name", name,
        "a TFDS config name must be letters, digits, '_', '-' or '.'")
  spec = sources.validate_source(name, section)
  _check_buildable(spec)
  identity = _identity(spec)
  data_dir = os.fspath(data_dir)
  cls = BUILDERS[kind]
  builder = cls(config=SourceBuilderConfig(name=name, spec=spec, identity=identity),
                data_dir=data_dir, file_format="array_record")
  if builder.is_prepared():
    stored = _read_metadata(os.fspath(builder.data_path))
    if stored != identity:
      raise ValueError(f"{builder.data_path} already holds a dataset built from {stored}, not "
                       f"from {identity}; give another name or delete that directory")
  else:
    builder.download_and_prepare()
  return f"{cls.name}/{name}"


def _read_metadata(path: str) -> dict[str, Any]:
  with open(os.path.join(path, "metadata.json"), encoding="utf-8") as f:
    return json.load(f)
