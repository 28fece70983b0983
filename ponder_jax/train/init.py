"""Partial initialisation from another checkpoint: the procedural paper's warm-up transfer.

METHODS.md §3.1: after a procedural warm-up, a new model copies selected components (attention,
MLP, norms) from the warm-up model; embeddings are copied, freshly initialised, or set to the
mean of the source's rows ("average"). Components map onto the parameter tree as below; the
layer count and the shapes of every copied tensor must match.
"""

from __future__ import annotations

from typing import Iterable

import jax
import numpy as np

_COMPONENT_PATHS = {
    "attention": (("layers", "attention"),),
    "mlp": (("layers", "mlp"),),
    "norms": (("layers", "attention_norm"), ("layers", "mlp_norm"), ("final_norm",)),
    "embeddings": (("token_embed",), ("position_embed",), ("lm_head",)),
}
_EMBEDDINGS = ("token_embed", "position_embed", "lm_head")


def _component(path: tuple[str, ...]) -> str | None:
  for name, prefixes in _COMPONENT_PATHS.items():
    if any(path[:len(p)] == p for p in prefixes):
      return name
  return None


def partial_init(fresh, source, *, components: Iterable[str], embeddings: str = "copy"):
  """A params tree like `fresh` with the chosen components taken from `source`.

  embeddings: 'copy' (take the source's tables; needs 'embeddings' in components), 'fresh'
  (keep the new init) or 'mean' (every row of the token table and head = the mean of the
  source's rows, the procedural paper's 'average' strategy; positions keep the new init).
  """
  components = {c for c in components if c}
  flat_fresh = {tuple(k.key for k in path): v for path, v in
                jax.tree_util.tree_flatten_with_path(fresh)[0]}
  flat_source = {tuple(k.key for k in path): v for path, v in
                 jax.tree_util.tree_flatten_with_path(source)[0]}
  out = {}
  for path, value in flat_fresh.items():
    name = _component(path)
    src = flat_source.get(path)
    if name == "embeddings" and embeddings != "copy":
      if embeddings == "mean" and path[0] in ("token_embed", "lm_head") and src is not None:
        axis = 0 if path[0] == "token_embed" else 1  # rows are tokens
        mean = np.asarray(src).mean(axis=axis, keepdims=True)
        value = np.broadcast_to(mean, value.shape).astype(np.float32)
      out[path] = value
      continue
    if name in components:
      if src is None:
        raise ValueError(f"init.from_checkpoint has no parameter {'/'.join(path)} "
                         f"(component '{name}')")
      if tuple(src.shape) != tuple(value.shape):
        raise ValueError(f"init.from_checkpoint: {'/'.join(path)} has shape {tuple(src.shape)}, "
                         f"the model expects {tuple(value.shape)} (component '{name}')")
      value = np.asarray(src, dtype=np.float32)
    out[path] = value
  return _unflatten(out)


def _unflatten(flat: dict) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree
