"""seqio Tasks and Mixtures over the project's sources, for T5X and other seqio users.

A task is a `seqio.FunctionDataSource` over a native source (any `data.sources.<name>` section,
see sources.py): its examples are the pipeline's own token examples, so a seqio task, the
pipeline and a TFDS build (tfds_builders.py) give the same tokens for the same seed. Features:

  targets    int32 token ids: `bos text eos` for text, the BoLT thought layout for thoughts and
             the math corpus with thoughts, task-local symbols mapped by `procedural_id` for
             procedural tasks (no eos is added: the layout already ends where it should)
  loss_mask  int32, 1 = the token is a training target (procedural output spans; all of text)

Splits: train and validation (the pipeline's eval split), and test for the math corpus. Item i of
a split is item i of the native source, in order (seqio shuffles afterwards when asked); the
thought form of each chunk of item i is drawn from `np.random.default_rng([seed, i])`. Pause
insertion, mixing by phase and packing stay in the pipeline (T5X's feature converters pack).

Registered on import, under stable names (every one with the `sentencepiece` vocabulary):
  ponder_jax.<task>          each procedural task with its default parameters, seed 0
  ponder_jax.math_thoughts   the math corpus in the thought layout (prior_prob 0.5)
  ponder_jax.math            the math corpus as raw text
  ponder_jax.text            the shipped Shakespeare sample
  ponder_jax.procedural      Mixture: every procedural task at rate 1
More with `register_task(name, section)` and `register_mixture(name, rates)`. Registering a name
again with the same definition returns the registered one (importing twice is harmless); with a
different definition it is an error.

`SeqioVocabulary` adapts a project vocabulary (any `data.vocab` spec) to `seqio.Vocabulary`;
`seqio.SentencePieceVocabulary('data/tokenizer.model')` encodes text to the same ids.
T5X's stock `seqio.DecoderFeatureConverter` reads `targets` alone (loss on every token);
`LossMaskLMFeatureConverter` packs `loss_mask` too and trains only on the targets it marks.

Not here: tokenization and layouts (sources.py, thoughts.py, vocab.py), TFDS (tfds_builders.py).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from ponder_jax.data import math_corpus, procedural, sources
from ponder_jax.data.vocab import Vocabulary, load_vocabulary
from ponder_jax.validation import check

PREFIX = "ponder_jax"
DEFAULT_VOCAB = "sentencepiece"
SPLITS = ("train", "validation")
_PIPELINE_SPLIT = {"train": "train", "validation": "eval"}


@functools.lru_cache(maxsize=None)
def _project_vocabulary(spec: str) -> Vocabulary:
  return load_vocabulary(spec)


class SeqioVocabulary(seqio.Vocabulary):
  """A project vocabulary (a `data.vocab` spec, loaded on first use) as a seqio.Vocabulary.

  Encoding is the project's own (`Vocabulary.encode`), in Python; the TensorFlow methods call it
  through `tf.numpy_function`, so they run in tf.data pipelines but do not serialise into a
  SavedModel (use `seqio.SentencePieceVocabulary` on the same model file for that). Equal specs
  give equal vocabularies, which seqio requires of the tasks of one mixture.
  """

  def __init__(self, spec: str = DEFAULT_VOCAB):
    super().__init__(extra_ids=0)
    self.spec = spec

  @property
  def vocabulary(self) -> Vocabulary:
    vocab = _project_vocabulary(self.spec)
    # seqio and T5X's feature converters pad with id 0.
    check(vocab.pad_id == seqio.vocabularies.PAD_ID, "data.vocab", self.spec,
          f"pads with id {vocab.pad_id}; seqio needs padding id {seqio.vocabularies.PAD_ID}")
    return vocab

  @property
  def bos_id(self) -> int:
    return self.vocabulary.bos_id

  @property
  def eos_id(self) -> int:
    return self.vocabulary.eos_id

  @property
  def unk_id(self) -> int | None:
    return getattr(self.vocabulary, "unk_id", None)

  @property
  def _base_vocab_size(self) -> int:
    return self.vocabulary.vocab_size

  def _encode(self, s: str) -> Sequence[int]:
    return self.vocabulary.encode(s)

  def _decode(self, ids: Sequence[int]) -> str:
    # Padding carries no text (seqio pads predictions and targets with it).
    return self.vocabulary.decode([int(i) for i in ids if i != seqio.vocabularies.PAD_ID])

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    def encode(text: np.ndarray) -> np.ndarray:  # a 0-d array holding bytes
      return np.asarray(self.vocabulary.encode(text.item().decode("utf-8")), np.int32)

    ids = tf.numpy_function(encode, [s], tf.int32, stateful=False)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    def decode(ids_N: np.ndarray) -> np.ndarray:
      rows = ids_N.reshape(-1, ids_N.shape[-1]) if ids_N.ndim else ids_N.reshape(1, 1)
      texts = [self._decode(row.tolist()).encode("utf-8") for row in rows]
      return np.asarray(texts, dtype=object).reshape(ids_N.shape[:-1])

    texts = tf.numpy_function(decode, [ids], tf.string, stateful=False)
    texts.set_shape(ids.shape[:-1])
    return texts

  def __eq__(self, other: Any) -> bool:
    # By class name, not isinstance: after a module reload, tasks registered before it hold
    # instances of the previous class object, and must still mix with each other.
    return type(other).__name__ == type(self).__name__ and getattr(other, "spec", None) == self.spec

  def __hash__(self) -> int:
    return hash((SeqioVocabulary, self.spec))

  def __repr__(self) -> str:
    return f"SeqioVocabulary({self.spec!r})"


_LOSS_MASK_VOCABULARY = seqio.PassThroughVocabulary(size=2, eos_id=None)


def output_features(vocab: str = DEFAULT_VOCAB) -> dict[str, seqio.Feature]:
  """The features every task here yields (see the module docstring)."""
  return {"targets": seqio.Feature(SeqioVocabulary(vocab), add_eos=False, dtype=tf.int32),
          "loss_mask": seqio.Feature(_LOSS_MASK_VOCABULARY, add_eos=False, dtype=tf.int32)}


class LossMaskLMFeatureConverter(seqio.LMFeatureConverter):
  """seqio's decoder-only converter, with each task's `loss_mask` as `decoder_loss_weights`.

  seqio's own LMFeatureConverter weights every non-padding token, which would train on a
  procedural prompt; this one packs `loss_mask` with the targets and weights by it. Pass
  `task_feature_lengths={'targets': L, 'loss_mask': L}`.
  """

  TASK_FEATURES = {"targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
                   "loss_mask": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)}

  def _convert_features(self, ds: tf.data.Dataset,
                        task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    # seqio's packer takes a feature's length from its non-zero entries, so the mask travels as
    # 1 + mask (never 0) and comes back as packed - 1 (padding, 0 after packing, stays 0).
    ds = ds.map(lambda ex: {**ex, "loss_mask": ex["loss_mask"] + 1})
    return super()._convert_features(ds, task_feature_lengths)

  def _convert_example(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    converted = dict(super()._convert_example(features))
    converted["decoder_loss_weights"] = tf.maximum(features["loss_mask"] - 1, 0)
    return converted


class SourceTask(seqio.Task):
  """A seqio.Task over a native source; `definition` is what it was registered from."""

  def __init__(self, *args: Any, definition: str, **kwargs: Any):
    super().__init__(*args, **kwargs)
    self.definition = definition


class SourceMixture(seqio.Mixture):
  """A seqio.Mixture of tasks registered here; `definition` is its tasks and rates."""

  def __init__(self, *args: Any, definition: str, **kwargs: Any):
    super().__init__(*args, **kwargs)
    self.definition = definition


_MATH_KEYS = tuple(f.name for f in dataclasses.fields(math_corpus.MathCorpusConfig))


def _math_test_records(spec: sources.SourceSpec, vocab: Vocabulary) -> tuple[Any, Iterator[Any]]:
  """The math corpus's test split (which the pipeline never reads) as native records, and a
  source whose `example` tokenizes them: an unbounded train split, which costs nothing to open
  and tokenizes as every split does."""
  unbounded = dataclasses.replace(spec, options={**spec.options, "train_size": 0})
  tokenizer = sources.open_source(unbounded, vocab, "train")
  config = math_corpus.MathCorpusConfig.from_config(
      {key: spec.options[key] for key in _MATH_KEYS}, spec.key)
  corpus = math_corpus.MathCorpus(config, "test", prefix=spec.key)
  field = "chunks" if spec.options["thoughts"] else "text"  # what the native source yields
  return tokenizer, (corpus[i][field] for i in range(len(corpus)))


def _examples(spec: sources.SourceSpec, split: str, vocab_spec: str,
              thought_seed: int) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
  def generate() -> Iterator[dict[str, np.ndarray]]:
    vocab = _project_vocabulary(vocab_spec)
    if split == "test":
      source, records = _math_test_records(spec, vocab)
    else:
      source = sources.open_source(spec, vocab, _PIPELINE_SPLIT[split])
      records = (source[i][1] for i in range(len(source)))
    for index, record in enumerate(records):
      example = source.example((index, record), np.random.default_rng([thought_seed, index]))
      yield {"targets": example["tokens"], "loss_mask": example["loss_mask"]}

  return generate


_SIGNATURE = {"targets": tf.TensorSpec([None], tf.int32),
              "loss_mask": tf.TensorSpec([None], tf.int32)}


def _splits(spec: sources.SourceSpec) -> tuple[str, ...]:
  if spec.kind == "math":
    return (*SPLITS, "test")
  return SPLITS if sources.has_eval_split(spec) else ("train",)


def _dataset_fn(spec: sources.SourceSpec, vocab: str, thought_seed: int):
  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    # Items are a pure function of (source, index): a source has no files to shuffle, and
    # seqio's example shuffle (get_dataset(shuffle=True)) applies afterwards.
    del shuffle_files, seed
    return tf.data.Dataset.from_generator(_examples(spec, split, vocab, thought_seed),
                                          output_signature=_SIGNATURE)

  return dataset_fn


def _check_new(registry: Any, name: str, definition: str) -> Any:
  """The registered provider of `name` if it has `definition`; None if `name` is free."""
  if name not in registry.names():
    return None
  existing = registry.get(name)
  if getattr(existing, "definition", None) == definition:
    return existing
  raise ValueError(f"seqio name {name!r} is already registered with another definition "
                   f"({getattr(existing, 'definition', type(existing).__name__)}); pick another "
                   f"name or {registry.__name__}.remove({name!r}) first")


def register_task(name: str, section: Any, *, vocab: str = DEFAULT_VOCAB,
                  seed: int = 0) -> seqio.Task:
  """Registers (or returns, if identical) the seqio task `name` over a `data.sources` section.

  `seed` seeds the thought forms (item i draws from default_rng([seed, i])). The section is
  validated now (ConfigError naming `data.sources.<name>.<key>`); data is read only when the
  task's dataset is iterated.
  """
  check(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**63, "seed",
        seed, "must be an integer in [0, 2**63)")
  spec = sources.validate_source(name, section)
  definition = json.dumps({"kind": spec.kind, "options": spec.options, "vocab": vocab,
                           "seed": seed}, sort_keys=True, default=str)
  existing = _check_new(seqio.TaskRegistry, name, definition)
  if existing is not None:
    return existing
  source = seqio.FunctionDataSource(_dataset_fn(spec, vocab, seed), splits=_splits(spec))
  return seqio.TaskRegistry.add(name, source=source, output_features=output_features(vocab),
                                task_cls=SourceTask, definition=definition)


def register_mixture(name: str, rates: Mapping[str, float]) -> seqio.Mixture:
  """Registers (or returns, if identical) a mixture of registered tasks; `rates` maps each task
  name to its positive sampling rate (seqio normalises them)."""
  if not rates:
    raise ValueError(f"mixture {name!r}: rates name no task")
  for task, rate in rates.items():
    if task not in seqio.TaskRegistry.names():
      raise ValueError(f"mixture {name!r}: no seqio task {task!r}; registered here: "
                       f"{registered_tasks()}")
    if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0):
      raise ValueError(f"mixture {name!r}: the rate of {task!r} is {rate!r}, not a positive "
                       "number")
  definition = json.dumps(sorted(rates.items()))
  existing = _check_new(seqio.MixtureRegistry, name, definition)
  if existing is not None:
    return existing
  return seqio.MixtureRegistry.add(name, sorted(rates.items()), mixture_cls=SourceMixture,
                                   definition=definition)


def registered_tasks() -> list[str]:
  """Names of the seqio tasks registered by this module."""
  return sorted(name for name in seqio.TaskRegistry.names()
                if isinstance(getattr(seqio.TaskRegistry.get(name), "definition", None), str))


def _register_defaults() -> None:
  for task in procedural.PROCEDURAL_TASKS:
    register_task(f"{PREFIX}.{task}", sources.source_config("procedural", task=task))
  register_task(f"{PREFIX}.math_thoughts", sources.source_config("math", thoughts=True))
  register_task(f"{PREFIX}.math", sources.source_config("math", thoughts=False))
  # Installed without the repository (and no $PONDER_JAX_DATA_DIR) there is no shipped text;
  # importing must still work.
  if os.path.isfile(sources.shipped_text_path()):
    register_task(f"{PREFIX}.text", sources.source_config("text"))
  register_mixture(f"{PREFIX}.procedural",
                   {f"{PREFIX}.{task}": 1.0 for task in procedural.PROCEDURAL_TASKS})


_register_defaults()
