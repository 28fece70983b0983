"""Partial initialisation from another checkpoint: the procedural paper's warm-up transfer.

METHODS.md §3.1: after a procedural warm-up, a new model copies selected components from the
warm-up model and trains everything. Semantic runs take attention, MLP and norms with fresh token
and position embeddings; algorithmic runs take everything, with every token row set to the mean
of the warm-up model's trained rows (strategy "average").

`init.components` (a comma list) names what is copied verbatim; every copied tensor must have
the same shape in both models:
  attention    the blocks' attention projections (layers/attention)
  mlp          the blocks' MLPs (layers/mlp)
  norms        the blocks' and the final norms (layers/attention_norm, layers/mlp_norm,
               final_norm)
  embeddings   the token table and the untied LM head (token_embed, lm_head; a tied source's
               head is its token table transposed)
  positions    the learned position table (position_embed; gpt2 only)
  everything   all of the above; the position table only where the model has one

`init.embeddings` decides the token table and head: `copy` takes them iff `embeddings` is a
chosen component (else they keep the new init), `fresh` keeps the new init, `mean` sets every row
(and head column) to the mean of the source's *trained* rows, whatever the components. Positions
follow only the `positions` component, so `everything` + `mean` is the paper's algorithmic setup.

Trained rows: a procedural model trained the rows of its task's symbols, not the other ~97% of
an 8,192-row table, which still hold their random init; averaging those would give a near-zero
mean instead of the paper's. By default (`init.embedding_rows = ''`) the rows are derived from
the source run's stored config (`trained_rows`): the ids the sources it trained on (the phases
reached by the checkpoint's step) can emit. `init.embedding_rows` can name them instead
(`parse_rows`: '9:265', '1,2,9:265'; half-open ranges) or be 'all'.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from ponder_jax.config import ConfigError
from ponder_jax.data import sources as sources_lib, tfds_records, vocab as vocab_lib
from ponder_jax.data.spec import validate_data_config
from ponder_jax.train import checkpoint as ckpt_lib, metrics

COMPONENTS = ("attention", "mlp", "norms", "embeddings", "positions")
EVERYTHING = "everything"  # every component
EMBEDDING_INITS = ("copy", "fresh", "mean")
ALL_ROWS = "all"  # init.embedding_rows: average every source row
ROWS_KEY = "init.embedding_rows"

_COMPONENT_PATHS = {
    "attention": (("layers", "attention"),),
    "mlp": (("layers", "mlp"),),
    "norms": (("layers", "attention_norm"), ("layers", "mlp_norm"), ("final_norm",)),
    "embeddings": (("token_embed",), ("lm_head",)),
    "positions": (("position_embed",),),
}
_THOUGHT_KINDS = ("thoughts",)  # kinds whose documents carry BoLT's latent-thought tokens


def expand_components(components: str | Iterable[str]) -> set[str]:
  """The set of components named by a comma list (or iterable); 'everything' means all.

  Raises ConfigError naming init.components on an unknown name.
  """
  names = components.split(",") if isinstance(components, str) else list(components)
  names = [n.strip() for n in names if n and n.strip()]
  out = set()
  for name in names:
    if name == EVERYTHING:
      out.update(COMPONENTS)
    elif name in COMPONENTS:
      out.add(name)
    else:
      raise ConfigError("init.components", ",".join(names),
                        f"unknown component '{name}'; use a comma list of "
                        f"{COMPONENTS + (EVERYTHING,)}")
  return out


def parse_rows(spec: str) -> np.ndarray | None:
  """The ids of an `init.embedding_rows` spec: '' -> None (derive them), 'all' -> None with
  every row, else a comma list of ids and half-open ranges 'a:b' (sorted, unique).

  Raises ConfigError naming init.embedding_rows on anything else, at start.
  """
  if not isinstance(spec, str):
    raise ConfigError(ROWS_KEY, spec, "must be a string such as '9:265' or '1,2,9:265'")
  text = spec.strip()
  if text in ("", ALL_ROWS):
    return None
  ids: list[int] = []
  for part in text.split(","):
    part = part.strip()
    try:
      if ":" in part:
        start, stop = (int(x) for x in part.split(":"))
        if not 0 <= start < stop:
          raise ValueError
        ids.extend(range(start, stop))
      else:
        ids.append(int(part))
        if ids[-1] < 0:
          raise ValueError
    except ValueError:
      raise ConfigError(ROWS_KEY, spec,
                        f"'{part}' is not an id >= 0 or a non-empty range 'start:stop'; use "
                        "a comma list such as '1,2,9:265', 'all', or '' (derive the rows from "
                        "the source run's config)") from None
  return np.unique(np.asarray(ids, np.int64))


# Which rows a source run trained ---------------------------------------------------------------


def _text_ids(vocab) -> np.ndarray:
  """Ids `vocab.encode` can produce: the text part of the vocabulary."""
  if isinstance(vocab, vocab_lib.ByteVocabulary):
    return np.arange(vocab_lib.BYTE_OFFSET, vocab_lib.TEXT_OFFSET)
  if isinstance(vocab, vocab_lib.SentencePieceVocabulary):
    return np.arange(vocab_lib.BYTE_OFFSET, vocab.vocab_size)
  # A Hugging Face tokenizer: every id of the tokenizer's own except the project's reserved ones.
  reserved = set(vocab.special_ids.values()) - {vocab.bos_id, vocab.eos_id}
  reserved |= set(getattr(vocab, "added_ids", ()))
  if vocab.num_procedural:
    reserved |= set(np.asarray(vocab.procedural_id(np.arange(vocab.num_procedural))).tolist())
  return np.asarray([i for i in range(vocab.vocab_size) if i not in reserved], np.int64)


def _source_ids(spec, vocab, gets_pauses: bool) -> np.ndarray:
  """The ids one `data.sources` entry of the source run can put into a training row."""
  o, kind = spec.options, spec.kind
  layout = o.get("layout", "text") if kind == "tfds" else ""
  generator = o.get("generator", "") if kind == "finetune" else ""  # prompt -> target pairs
  if kind == "procedural" or layout == "procedural" or generator == "procedural":
    if kind != "tfds":
      # The same construction the pipeline uses (cheap: items are generated on access).
      # pylint: disable-next=protected-access
      source = sources_lib._procedural_source(spec.name, o, "train")
    else:
      source = tfds_records.TfdsRecords(o["name"], o["split"], data_dir=o["data_dir"],
                                        layout="procedural", key=spec.key)
    ids = [np.asarray(vocab.procedural_id(np.arange(source.num_symbols)), np.int64)]
  elif kind in ("text", "jsonl", "array_record", "tfds", "math", "thoughts") or generator:
    ids = [_text_ids(vocab), np.asarray([vocab.bos_id, vocab.eos_id])]
    if kind in _THOUGHT_KINDS or layout == "thoughts" or (kind == "math" and o.get("thoughts")):
      ids.append(np.asarray([vocab.sol_id, vocab.eol_id, vocab.prior_id, vocab.posterior_id]))
  else:
    raise ValueError(f"cannot tell which embedding rows a '{kind}' source ({spec.key}) "
                     f"trains; set {ROWS_KEY} explicitly")
  if gets_pauses:
    ids.append(np.asarray([vocab.pause_id]))
  if generator and o.get("num_pauses", 0):  # PauseFT's pauses between prompt and target
    ids.append(np.asarray([vocab.pause_id]))
  return np.concatenate(ids).astype(np.int64)


def trained_rows(source_config: Mapping[str, Any], step: int | None = None) -> np.ndarray:
  """The token ids a run with the resolved `source_config` trained, up to step `step`.

  The ids every source of every phase that started before `step` (None: all phases) can emit:
  a procedural task's symbols, the vocabulary's text ids plus bos/eos for text (and the
  latent-thought tokens for thought layouts), `<pause>` where pauses were inserted. Padding is
  not trained (it sits in segment 0, which nothing attends to, and carries no loss).
  """
  data = validate_data_config(source_config["data"])
  vocab = vocab_lib.run_vocabulary(source_config["data"], source_config.get("init"))
  used: set[str] = set()
  for index, start, _ in data.schedule():
    if step is None or start < step or start == 0:
      used.update(data.phases[index].weights)
  ids = [_source_ids(data.sources[name], vocab,
                     gets_pauses=bool(data.pause_ratio > 0 and data.sources[name].pause))
         for name in sorted(used)]
  return np.unique(np.concatenate(ids))


def load_source_config(path: str) -> tuple[dict[str, Any], int | None]:
  """(resolved config, step) stored with the newest trainer checkpoint under `path`."""
  step_dir = ckpt_lib.resolve_checkpoint_dir(path)
  config_dir = os.path.join(step_dir, "config")
  if not os.path.isdir(config_dir):
    raise FileNotFoundError(f"{config_dir}: missing")
  config = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(config_dir)
  name = os.path.basename(step_dir)
  return config, int(name) if name.isdigit() else None


def resolve_rows(init_config: Mapping[str, Any]) -> np.ndarray | None:
  """The rows 'mean' averages for this `init` section: explicit, all (None) or derived."""
  spec = init_config["embedding_rows"]
  if spec.strip() == ALL_ROWS:
    return None
  rows = parse_rows(spec)
  if rows is not None:
    return rows
  path = init_config["from_checkpoint"]
  try:
    config, step = load_source_config(path)
    return trained_rows(config, step)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(ROWS_KEY, spec,
                      f"cannot derive the rows the source run {path} trained from its stored "
                      f"config ({type(e).__name__}: {e}); name them, e.g. '9:265', or 'all'"
                      ) from e


# The transfer ------------------------------------------------------------------------------------


def _component(path: tuple[str, ...]) -> str | None:
  for name, prefixes in _COMPONENT_PATHS.items():
    if any(path[:len(p)] == p for p in prefixes):
      return name
  return None


def _flat(tree) -> dict[tuple[str, ...], Any]:
  return {tuple(k.key for k in path): v
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _token_rows(flat_source: Mapping[tuple[str, ...], Any], name: str) -> np.ndarray | None:
  """The source's token-major [V, D] table for 'token_embed' or 'lm_head' (a tied source's head
  is its token table)."""
  if name == "lm_head":
    head = flat_source.get(("lm_head",))
    return np.asarray(head).T if head is not None else _token_rows(flat_source, "token_embed")
  table = flat_source.get(("token_embed",))
  return None if table is None else np.asarray(table)


def partial_init(fresh, source, *, components: str | Iterable[str],
                 embeddings: str = "copy", rows: np.ndarray | None = None):
  """A params tree like `fresh` with the chosen components taken from `source`.

  components: names of the module docstring ('everything' = all). embeddings: 'copy', 'fresh'
  or 'mean' (every row of the token table, and every column of the head, = the mean of the
  source's rows `rows`; None averages every row). Raises ValueError naming the parameter when a
  chosen one is missing from the source or has another shape.
  """
  chosen = expand_components(components)
  if embeddings not in EMBEDDING_INITS:
    raise ConfigError("init.embeddings", embeddings, f"must be one of {EMBEDDING_INITS}")
  flat_source = _flat(source)
  out = {}
  for path, value in _flat(fresh).items():
    name = _component(path)
    if name == "embeddings" and embeddings != "copy":
      if embeddings == "mean":
        value = _mean_rows(path[0], _token_rows(flat_source, path[0]), rows, value)
      out[path] = value
      continue
    if name in chosen:
      src = flat_source.get(path)
      if src is None and path[0] == "lm_head":
        src = _token_rows(flat_source, "lm_head")
        src = None if src is None else src.T
      if src is None:
        raise ValueError(f"init.from_checkpoint has no parameter {'/'.join(path)} "
                         f"(component '{name}')")
      if tuple(src.shape) != tuple(value.shape):
        raise ValueError(f"init.from_checkpoint: {'/'.join(path)} has shape {tuple(src.shape)}, "
                         f"the model expects {tuple(value.shape)} (component '{name}')")
      value = np.asarray(src, dtype=np.float32)
    out[path] = value
  return _unflatten(out)


def _mean_rows(name: str, table_VxD: np.ndarray | None, rows: np.ndarray | None, value):
  """`value` ([V, D] token table or [D, V] head) with every token set to the mean of the
  source's `rows`."""
  if table_VxD is None:
    raise ValueError(f"init.from_checkpoint has no token table to average for {name}")
  if rows is not None:
    rows = np.asarray(rows, np.int64)
    if rows.size == 0 or rows.max() >= table_VxD.shape[0]:
      raise ConfigError(ROWS_KEY, _describe(rows), f"the source's {name} has "
                        f"{table_VxD.shape[0]} rows; the ids must be below that (and not empty)")
    table_VxD = table_VxD[rows]
  mean_D = table_VxD.astype(np.float64).mean(axis=0).astype(np.float32)
  shape = tuple(value.shape)
  out = mean_D[None, :] if name == "token_embed" else mean_D[:, None]
  return np.broadcast_to(out, shape).astype(np.float32)


def _describe(rows: np.ndarray) -> str:
  """Ids as the compact range list parse_rows reads back ('9:265,300')."""
  rows = np.unique(np.asarray(rows, np.int64))
  if rows.size == 0:
    return ""
  breaks = np.flatnonzero(np.diff(rows) != 1) + 1
  parts = []
  for run in np.split(rows, breaks):
    parts.append(str(run[0]) if run.size == 1 else f"{run[0]}:{run[-1] + 1}")
  return ",".join(parts)


def init_from_checkpoint(fresh, init_config: Mapping[str, Any]):
  """`fresh` with the components of the `init` section's from_checkpoint taken over; logs what
  came from where, so a run's log says how it was initialised."""
  path = init_config["from_checkpoint"]
  chosen = expand_components(init_config["components"])
  strategy = init_config["embeddings"]
  rows = resolve_rows(init_config) if strategy == "mean" else None
  params = partial_init(fresh, ckpt_lib.load_params(path), components=chosen,
                        embeddings=strategy, rows=rows)
  tables = {"copy": "copied" if "embeddings" in chosen else "fresh", "fresh": "fresh",
            "mean": "mean of the source's rows " + (_describe(rows) if rows is not None
                                                    else "(all)")}[strategy]
  metrics.announce(f"init.from_checkpoint {path}: copied "
                   f"{', '.join(c for c in COMPONENTS if c in chosen) or 'nothing'}; "
                   f"token table and head: {tables}")
  return params


def _unflatten(flat: dict) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree
