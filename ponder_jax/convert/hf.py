"""Import Hugging Face GPT-2 / GPT-NeoX (Pythia) / LLaMA checkpoints, and export them back.

`import_hf(dir_or_model)` -> (ModelConfig, params) with logit parity: every tensor is checked
against the shape the config implies before anything is read, and every tensor of the file must
be used, so a conversion is exact or fails naming the file, tensor and shapes.

Placement is lazy: each param is a `jax.make_array_from_callback` whose callback reads, for the
one shard a device holds, only the Hugging Face tensors of the layers in that shard (and only
the rows in it, for the embedding tables). With a mesh, params land directly with their
logical-axis shardings: a host holds at most one Hugging Face tensor plus its own devices'
shards of one param, never the whole model.

`load_pretrained(dir)` adds the tokenizer (tokenizer.py) and its reserved tokens, growing the
vocabulary tables: rows of new tokens, and rows added to round the table up to
`vocab_multiple`, start at the mean of the rows of the tokenizer's original tokens (as
transformers' `resize_token_embeddings(mean_resizing=True)` does for the mean), or at
N(0, new_row_std^2) with `new_row_init='normal'`. An untied head gets the same treatment.

`export_hf(cfg, params, dir, ponder=..., vocabulary=...)` writes config.json + model.safetensors
(fp32) that `transformers.AutoModelForCausalLM.from_pretrained` loads, and the tokenizer when
given (any project vocabulary: tokenizer.py's `hf_vocabulary`). A model that ponders is
exported as what it computes: model_type `ponder_<family>`, its `ponder.*` settings as
`ponder_*` keys, and modeling_ponder.py (registered through `auto_map`), which runs the pondering
loop on the family's transformers model under `trust_remote_code=True`; loading it without that
flag fails rather than giving the plain backbone. Only `plain_backbone=True` writes such a
model as its plain backbone, and export_hf returns what that drops. `read_ponder_config` reads
the settings back, so an export re-imports as the same model config, ponder settings and
vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, SingleDeviceSharding

from ponder_jax import sharding as sharding_lib
from ponder_jax.config import ConfigError, ModelConfig, PonderConfig
from ponder_jax.convert import sources as sources_lib
from ponder_jax.convert.families import (BY_FAMILY, PONDER_MODEL_TYPE_PREFIX, Family, Plan,
                                         family_of)
from ponder_jax.convert.sources import CheckpointError, TensorSource
from ponder_jax.convert.tokenizer import hf_vocabulary
from ponder_jax.data.vocab import HFVocabulary, Vocabulary, load_hf_vocabulary
from ponder_jax.model.transformer import Transformer

NEW_ROW_INITS = ("mean", "normal")
MODELING_FILE = "modeling_ponder.py"  # copied into pondering exports; torch + transformers only
PONDER_KEY_PREFIX = "ponder_"  # config.json key of PonderConfig field f: ponder_<f>
# modeling_ponder.py's classes per family: (config, causal LM).
_PONDER_CLASSES = {
    "gpt2": ("PonderGPT2Config", "PonderGPT2LMHeadModel"),
    "neox": ("PonderGPTNeoXConfig", "PonderGPTNeoXForCausalLM"),
    "llama": ("PonderLlamaConfig", "PonderLlamaForCausalLM"),
}
_MEAN_CHUNK_ROWS = 8192  # rows per read when averaging a vocabulary table


class _Checkpoint:
  """An opened Hugging Face checkpoint: family, ModelConfig, and tensors by canonical name."""

  def __init__(self, hf_config: Mapping[str, Any], config_where: str, source: TensorSource,
               where: str):
    self.family: Family = family_of(hf_config, config_where)
    self.cfg = self.family.model_config(hf_config, config_where)
    self.config_where, self.where, self.source = config_where, where, source
    self._actual: dict[str, str] = {}
    for name in source.names():
      if self.family.ignored and self.family.ignored.search(name):
        continue
      canonical = self.family.canonical(name)
      if canonical in self._actual:
        raise CheckpointError(f"{where}: tensors '{self._actual[canonical]}' and '{name}' are "
                              "the same weight under two names")
      self._actual[canonical] = name

  def __enter__(self) -> "_Checkpoint":
    return self

  def __exit__(self, *exc) -> None:
    self.source.close()

  def read(self, name: str, rows: slice | None = None) -> np.ndarray:
    return self.source.read(self._actual[name], rows)

  def check(self, plans: Mapping[str, Plan]) -> None:
    """Every tensor the plans need exists with its config shape, and none is left unused."""
    needed = set()
    for path, plan in plans.items():
      for template, shape in plan.sources:
        names = ([template.format(i=i) for i in range(self.cfg.n_layers)] if plan.stacked
                 else [template])
        for name in names:
          needed.add(name)
          if name not in self._actual:
            raise CheckpointError(f"{self.where}: tensor '{name}' is missing (it becomes our "
                                  f"param '{path}')")
          actual = self._actual[name]
          found = tuple(self.source.shape(actual))
          if found != tuple(shape):
            raise CheckpointError(
                f"{self.source.location(actual)}: tensor '{actual}' has shape {found}, expected "
                f"{tuple(shape)} from {self.config_where}")
    if self.cfg.tie_embeddings:
      needed.add(self.family.head_name)  # an in-memory tied model lists its head; it is E_in
    unused = sorted(set(self._actual) - needed)
    if unused:
      shown = ", ".join(repr(self._actual[n]) for n in unused[:8])
      raise CheckpointError(
          f"{self.where}: {len(unused)} tensor(s) have no place in a {self.family.family} model "
          f"of {self.config_where} (e.g. {shown}); refusing a conversion that would drop them")


def _open(source: Any) -> _Checkpoint:
  """A directory path, or an in-memory `transformers` causal LM."""
  if isinstance(source, (str, os.PathLike)):
    directory = os.fspath(source)
    if not os.path.isdir(directory):
      raise FileNotFoundError(f"{directory}: no such Hugging Face model directory")
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
      raise FileNotFoundError(f"{config_path}: missing (every Hugging Face model directory has "
                              "one)")
    with open(config_path, encoding="utf-8") as f:
      try:
        hf_config = json.load(f)
      except ValueError as e:
        raise ValueError(f"{config_path}: not valid JSON ({e})") from e
    # The config is checked before the (possibly large) weights are opened.
    family_of(hf_config, config_path).model_config(hf_config, config_path)
    return _Checkpoint(hf_config, config_path, sources_lib.open_directory(directory), directory)
  if hasattr(source, "state_dict") and hasattr(source, "config"):
    where = f"in-memory {type(source).__name__}"
    tensors = source.state_dict()
    return _Checkpoint(source.config.to_dict(), f"{where}.config",
                       sources_lib.StateDictSource(tensors, where), where)
  raise TypeError(f"expected a model directory or a transformers model, found {type(source)}")


@dataclasses.dataclass(frozen=True)
class _NewRows:
  """Vocabulary-table rows initialised rather than read: sorted `ids`, values per table path."""
  vocab_size: int  # rows of the grown tables
  ids: np.ndarray
  values: Mapping[str, np.ndarray]  # 'token_embed' / 'lm_head' -> [len(ids), D]


def _flat_paths(tree) -> tuple[list[str], list[Any], Any]:
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  paths = ["/".join(str(k.key) for k in path) for path, _ in leaves]
  return paths, [leaf for _, leaf in leaves], treedef


def _abstract_variables(cfg: ModelConfig):
  """The boxed abstract variables of Transformer(cfg): shapes and logical axes, no compute."""
  return jax.eval_shape(Transformer(cfg).init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))


def _param_shardings(cfg: ModelConfig, mesh: Mesh | None, rules) -> tuple[Any, Any]:
  """(unboxed abstract params, matching shardings)."""
  abstract = _abstract_variables(cfg)
  shapes = nn.meta.unbox(abstract)["params"]
  if mesh is None:
    device = SingleDeviceSharding(jax.local_devices()[0])
    return shapes, jax.tree.map(lambda _: device, shapes)
  if rules is None:
    raise ValueError("importing onto a mesh needs logical-axis rules (e.g. "
                     "sharding.logical_rules('fsdp_tp'))")
  if isinstance(rules, str):
    rules = sharding_lib.logical_rules(rules)
  return shapes, sharding_lib.logical_sharding(abstract, mesh, rules)["params"]


def _table_rows(ckpt: _Checkpoint, name: str, path: str, old_rows: int, start: int, stop: int,
                new: _NewRows | None) -> np.ndarray:
  """Rows [start, stop) of a vocabulary table in Hugging Face layout [rows, D]."""
  parts = []
  if start < old_rows:
    parts.append(ckpt.read(name, slice(start, min(stop, old_rows))))
  if stop > old_rows:
    parts.append(np.zeros((stop - max(start, old_rows), ckpt.cfg.d_model), np.float32))
  rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
  if new is not None and path in new.values:
    inside = (new.ids >= start) & (new.ids < stop)
    rows = rows.copy()
    rows[new.ids[inside] - start] = new.values[path][inside]
  return rows


def _callback(ckpt: _Checkpoint, path: str, plan: Plan, shape: tuple[int, ...],
              new: _NewRows | None):
  """index (a tuple of slices) -> that part of our param, reading only what it needs."""
  if plan.row_axis is not None:
    (name, source_shape), = plan.sources

    def read_rows(index):
      start, stop, _ = index[plan.row_axis].indices(shape[plan.row_axis])
      table = plan.build(_table_rows(ckpt, name, path, source_shape[0], start, stop, new))
      rest = list(index)
      rest[plan.row_axis] = slice(None)
      return table[tuple(rest)]
    return read_rows

  if plan.stacked:
    def read_layers(index):
      layers = range(ckpt.cfg.n_layers)[index[0]]
      return np.stack([plan.build(*[ckpt.read(n.format(i=i)) for n, _ in plan.sources])[index[1:]]
                       for i in layers])
    return read_layers

  return lambda index: plan.build(*[ckpt.read(n) for n, _ in plan.sources])[index]


def _place(ckpt: _Checkpoint, cfg: ModelConfig, mesh: Mesh | None, rules,
           new: _NewRows | None = None) -> dict:
  """Our params for `cfg` (ckpt.cfg, possibly with a grown vocabulary), lazily placed."""
  plans = ckpt.family.plans(ckpt.cfg)
  ckpt.check(plans)
  shapes, shardings = _param_shardings(cfg, mesh, rules)
  paths, shape_leaves, treedef = _flat_paths(shapes)
  _, sharding_leaves, _ = _flat_paths(shardings)
  if set(paths) != set(plans):
    raise AssertionError(f"converter plans {sorted(plans)} do not match the model's params "
                         f"{sorted(paths)}")
  arrays = []
  for path, abstract, sharding in zip(paths, shape_leaves, sharding_leaves):
    try:
      sharding.shard_shape(abstract.shape)
    except ValueError as e:
      raise ValueError(f"param '{path}' of shape {abstract.shape} cannot be split as "
                       f"{sharding.spec} on mesh {dict(mesh.shape)}: {e}. For the vocabulary "
                       "axis, grow it with load_pretrained(vocab_multiple=...)") from e
    arrays.append(jax.make_array_from_callback(
        abstract.shape, sharding, _callback(ckpt, path, plans[path], abstract.shape, new)))
  return jax.tree_util.tree_unflatten(treedef, arrays)


def import_hf(source: str | os.PathLike | Any, *, mesh: Mesh | None = None,
              rules: str | Sequence | None = None) -> tuple[ModelConfig, dict]:
  """(ModelConfig, params) of a Hugging Face model directory or in-memory transformers model.

  Without a mesh the params live on the first device; with one (and logical `rules`, a name in
  sharding.RULES or a rule table) each param is placed with its logical-axis sharding.
  """
  with _open(source) as ckpt:
    return ckpt.cfg, _place(ckpt, ckpt.cfg, mesh, rules)


def _row_mean(ckpt: _Checkpoint, name: str, rows: int) -> np.ndarray:
  total = np.zeros(ckpt.cfg.d_model, np.float64)
  for start in range(0, rows, _MEAN_CHUNK_ROWS):
    total += ckpt.read(name, slice(start, min(rows, start + _MEAN_CHUNK_ROWS))).sum(0, np.float64)
  return (total / rows).astype(np.float32)


def _new_rows(ckpt: _Checkpoint, vocab: HFVocabulary, *, init: str, std: float, multiple: int,
              seed: int) -> _NewRows | None:
  old = ckpt.cfg.vocab_size
  needed = max(old, vocab.vocab_size)
  size = old if needed == old else -(-needed // multiple) * multiple
  ids = np.asarray(sorted(set(vocab.added_ids) | set(range(old, size))), dtype=np.int64)
  if not ids.size:
    return None
  tables = {"token_embed": ckpt.family.embed_name}
  if not ckpt.cfg.tie_embeddings:
    tables["lm_head"] = ckpt.family.head_name
  rng = np.random.default_rng(seed)
  values = {}
  for path, name in tables.items():
    if init == "mean":
      mean_D = _row_mean(ckpt, name, min(vocab.base_size, old))
      values[path] = np.broadcast_to(mean_D, (ids.size, ckpt.cfg.d_model)).copy()
    else:
      values[path] = rng.normal(0.0, std, (ids.size, ckpt.cfg.d_model)).astype(np.float32)
  return _NewRows(size, ids, values)


def load_pretrained(path: str | os.PathLike, *, mesh: Mesh | None = None,
                    rules: str | Sequence | None = None, add_tokens: bool = True,
                    num_procedural: int = 0, new_row_init: str = "mean",
                    new_row_std: float = 0.02, vocab_multiple: int = 128,
                    seed: int = 0,
                    vocab: HFVocabulary | None = None) -> tuple[ModelConfig, dict, HFVocabulary]:
  """(ModelConfig, params, vocabulary) for continued pretraining from a Hugging Face directory.

  The tokenizer gains the project's reserved tokens (`add_tokens=False`: they must be there
  already) and `num_procedural` procedural symbols; or `vocab` is that tokenizer, already loaded
  (the trainer's `run_vocabulary`). When the vocabulary outgrows the tables they
  grow to the next multiple of `vocab_multiple` (so the vocab axis splits evenly on a mesh);
  see the module docstring for how new rows start (`new_row_init` 'mean' | 'normal').
  """
  if new_row_init not in NEW_ROW_INITS:
    raise ConfigError("new_row_init", new_row_init, f"must be one of {NEW_ROW_INITS}")
  if not (isinstance(vocab_multiple, int) and vocab_multiple >= 1):
    raise ConfigError("vocab_multiple", vocab_multiple, "must be an integer >= 1")
  if not new_row_std > 0:
    raise ConfigError("new_row_std", new_row_std, "must be positive")
  if vocab is None:
    vocab = load_hf_vocabulary(os.fspath(path), add_tokens=add_tokens,
                               num_procedural=num_procedural)
  with _open(path) as ckpt:
    new = _new_rows(ckpt, vocab, init=new_row_init, std=new_row_std, multiple=vocab_multiple,
                    seed=seed)
    cfg = ckpt.cfg if new is None else dataclasses.replace(ckpt.cfg, vocab_size=new.vocab_size)
    return cfg, _place(ckpt, cfg, mesh, rules, new), vocab


def _check_params(cfg: ModelConfig, params) -> dict[str, np.ndarray]:
  """params as host arrays by 'a/b/c' path, checked against the tree Transformer(cfg) has."""
  want_paths, want, _ = _flat_paths(nn.meta.unbox(_abstract_variables(cfg))["params"])
  paths, leaves, _ = _flat_paths(nn.meta.unbox(params))
  if sorted(paths) != sorted(want_paths):
    raise ValueError(f"params do not match a {cfg.family} model: missing "
                     f"{sorted(set(want_paths) - set(paths))}, unexpected "
                     f"{sorted(set(paths) - set(want_paths))}")
  flat = dict(zip(paths, leaves))
  for path, abstract in zip(want_paths, want):
    if tuple(flat[path].shape) != tuple(abstract.shape):
      raise ValueError(f"param '{path}' has shape {tuple(flat[path].shape)}, expected "
                       f"{tuple(abstract.shape)} from the model config")
  return {path: np.asarray(jax.device_get(leaf), dtype=np.float32) for path, leaf in flat.items()}


def ponders(ponder: PonderConfig) -> bool:
  """Whether `ponder` makes the model compute something other than its plain backbone."""
  return bool(ponder.steps or ponder.steps_max or ponder.scale_embeds)


def plain_backbone_losses(cfg: ModelConfig, ponder: PonderConfig) -> list[str]:
  """What exporting a model that ponders as its plain backbone drops, one line per setting."""
  lost = []
  if ponder.steps or ponder.steps_max:
    drawn = f" (drawn up to {ponder.steps_max} per batch)" if ponder.steps_max else ""
    lost.append(f"ponder.steps = {ponder.steps}{drawn}: the soft-embedding passes; the plain "
                "backbone runs one pass")
  if ponder.scale_embeds:
    lost.append(f"ponder.scale_embeds: token embeddings x sqrt(d_model) = "
                f"{math.sqrt(cfg.d_model):.4g}")
  if ponders(ponder) and ponder.multiply_initial:
    lost.append("ponder.multiply_initial: the loop starts from s * E0")
  if ponders(ponder) and ponder.top_k:
    lost.append(f"ponder.top_k = {ponder.top_k}: the mixture over the top-k tokens")
  return lost


def _ponder_keys(ponder: PonderConfig) -> dict[str, Any]:
  return {PONDER_KEY_PREFIX + name: value for name, value in dataclasses.asdict(ponder).items()}


def read_ponder_config(source: str | os.PathLike | Mapping[str, Any] | Any) -> PonderConfig:
  """The ponder settings of an export: its config.json's `ponder_*` keys (none: PonderConfig(),
  the plain model). `source` is a model directory, a config dict or a transformers model."""
  where = "config"
  if isinstance(source, (str, os.PathLike)):
    if not os.path.isdir(source):
      raise FileNotFoundError(f"{os.fspath(source)}: no such Hugging Face model directory")
    where = os.path.join(os.fspath(source), "config.json")
    if not os.path.isfile(where):
      raise FileNotFoundError(f"{where}: missing (every Hugging Face model directory has one)")
    with open(where, encoding="utf-8") as f:
      try:
        hf_config = json.load(f)
      except ValueError as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from e
  elif isinstance(source, Mapping):
    hf_config = source
  elif hasattr(source, "config"):
    where, hf_config = f"in-memory {type(source).__name__}.config", source.config.to_dict()
  else:
    raise TypeError(f"expected a model directory, config dict or transformers model, found "
                    f"{type(source)}")
  section = {key[len(PONDER_KEY_PREFIX):]: value for key, value in hf_config.items()
             if key.startswith(PONDER_KEY_PREFIX)}
  try:
    ponder = PonderConfig.from_config(section, vocab_size=hf_config.get("vocab_size"))
  except ConfigError as e:
    key = e.key.replace("ponder.", PONDER_KEY_PREFIX, 1)
    why = str(e).removeprefix(f"config key '{e.key}' = {e.value!r}: ")
    raise ConfigError(f"{where}:{key}", e.value, why) from e
  if ponders(ponder) and not str(hf_config.get("model_type", "")).startswith(
      PONDER_MODEL_TYPE_PREFIX):
    raise ConfigError(f"{where}:model_type", hf_config.get("model_type"),
                      "has ponder_* settings that ponder, but is not a pondering model type "
                      f"('{PONDER_MODEL_TYPE_PREFIX}<family>'): transformers would run it plain")
  return ponder


def export_hf(cfg: ModelConfig, params, out_dir: str | os.PathLike, *,
              ponder: PonderConfig | None = None, vocabulary: Vocabulary | None = None,
              plain_backbone: bool = False) -> list[str]:
  """Writes config.json + model.safetensors (fp32) and, if given, the tokenizer to `out_dir`.

  `ponder` (None: the plain model) is how the params compute; a model that ponders is written
  with modeling_ponder.py (module docstring) unless `plain_backbone`, which writes the backbone
  alone. Returns what the export drops: `plain_backbone_losses` when a pondering model was
  written plain, else []. `vocabulary` may be any of the project's vocabularies.
  """
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  family = BY_FAMILY[cfg.family]
  if not family.any_head_dim and cfg.head_dim * cfg.n_heads != cfg.d_model:
    raise ConfigError("model.head_dim", cfg.head_dim,
                      f"Hugging Face {family.model_type} needs head_dim * n_heads == d_model")
  ponder = PonderConfig() if ponder is None else ponder.validated(cfg.vocab_size)
  if vocabulary is not None:
    vocabulary = hf_vocabulary(vocabulary)
    if vocabulary.vocab_size > cfg.vocab_size:
      raise ConfigError("model.vocab_size", cfg.vocab_size,
                        f"is smaller than the tokenizer's {vocabulary.vocab_size} ids")
  tensors = family.export(cfg, _check_params(cfg, params))
  hf_config = {"architectures": [family.architecture], "model_type": family.model_type,
               **family.hf_config(cfg), "torch_dtype": "float32"}
  lost = plain_backbone_losses(cfg, ponder) if plain_backbone else []
  if ponders(ponder) and not plain_backbone:
    config_class, model_class = _PONDER_CLASSES[cfg.family]
    module = os.path.splitext(MODELING_FILE)[0]
    hf_config.update(
        architectures=[model_class], model_type=PONDER_MODEL_TYPE_PREFIX + family.model_type,
        auto_map={"AutoConfig": f"{module}.{config_class}",
                  "AutoModelForCausalLM": f"{module}.{model_class}"},
        use_cache=False,  # generation recomputes every pass over the whole sequence
        **_ponder_keys(ponder))
  # Without a tokenizer the special ids are unknown: null, not transformers' per-model defaults.
  for name in ("bos", "eos", "pad"):
    hf_config[f"{name}_token_id"] = getattr(vocabulary, f"{name}_id") if vocabulary else None
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  stale = os.path.join(out_dir, MODELING_FILE)
  if "auto_map" in hf_config:
    shutil.copyfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), MODELING_FILE),
                    stale)
  elif os.path.exists(stale):
    os.remove(stale)  # a plain export over an earlier pondering one
  save_file(tensors, os.path.join(out_dir, sources_lib.SAFETENSORS), metadata={"format": "pt"})
  with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf_config, f, indent=2)
  if vocabulary is not None:
    vocabulary.save(out_dir)
  return lost
