"""The optax chain built from the `optim` config section.

clip by global norm -> AdamW | Lion | Adafactor, with a learning-rate schedule (linear warmup,
then cosine, linear, WSD (warmup-stable-decay) or constant down to `min_lr_ratio * lr`) and a
weight-decay mask that skips norms and biases, and embeddings unless `decay_embeddings`.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import ml_collections
import optax

from ponder_jax.config import ConfigError

OPTIMIZERS = ("adamw", "lion", "adafactor")
SCHEDULES = ("cosine", "linear", "wsd", "constant")
_EMBEDDINGS = ("token_embed", "position_embed", "lm_head")


def default_optim_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name="adamw",
      lr=1e-3,
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      weight_decay=0.01,
      decay_embeddings=False,
      clip_norm=1.0,  # 0 disables clipping
      schedule="cosine",
      warmup_steps=100,
      min_lr_ratio=0.1,
      decay_fraction=0.2,  # wsd: the last fraction of steps decays
  ))


def validate_optim_config(cfg: Mapping[str, Any]) -> None:
  def check(ok, key, why):
    if not ok:
      raise ConfigError(f"optim.{key}", cfg[key], why)
  check(cfg["name"] in OPTIMIZERS, "name", f"must be one of {OPTIMIZERS}")
  check(cfg["schedule"] in SCHEDULES, "schedule", f"must be one of {SCHEDULES}")
  check(cfg["lr"] > 0, "lr", "must be positive")
  check(cfg["warmup_steps"] >= 0, "warmup_steps", "must be >= 0")
  check(0.0 <= cfg["min_lr_ratio"] <= 1.0, "min_lr_ratio", "must lie in [0, 1]")
  check(0.0 < cfg["decay_fraction"] <= 1.0, "decay_fraction", "must lie in (0, 1]")
  check(cfg["weight_decay"] >= 0, "weight_decay", "must be >= 0")
  check(cfg["clip_norm"] >= 0, "clip_norm", "must be >= 0 (0 disables clipping)")


def learning_rate_schedule(cfg: Mapping[str, Any], total_steps: int) -> optax.Schedule:
  peak, floor = cfg["lr"], cfg["lr"] * cfg["min_lr_ratio"]
  warmup = min(int(cfg["warmup_steps"]), max(total_steps - 1, 0))
  rest = max(total_steps - warmup, 1)
  if cfg["schedule"] == "constant":
    after = optax.constant_schedule(peak)
  elif cfg["schedule"] == "cosine":
    after = optax.cosine_decay_schedule(peak, rest, alpha=cfg["min_lr_ratio"])
  elif cfg["schedule"] == "linear":
    after = optax.linear_schedule(peak, floor, rest)
  else:  # wsd: stable at the peak, then a linear decay over the last decay_fraction
    decay = max(int(round(rest * cfg["decay_fraction"])), 1)
    after = optax.join_schedules(
        [optax.constant_schedule(peak), optax.linear_schedule(peak, floor, decay)],
        [rest - decay])
  if not warmup:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def weight_decay_mask(params, decay_embeddings: bool):
  """True for matrices that decay: not norms, not biases, embeddings only if asked."""
  def decays(path, _):
    names = [getattr(k, "key", str(k)) for k in path]
    if names[-1] in ("bias", "scale"):
      return False
    return decay_embeddings or names[0] not in _EMBEDDINGS
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(cfg: Mapping[str, Any], total_steps: int):
  """Returns (optax transformation, learning-rate schedule)."""
  validate_optim_config(cfg)
  schedule = learning_rate_schedule(cfg, total_steps)
  mask = lambda params: weight_decay_mask(params, cfg["decay_embeddings"])
  if cfg["name"] == "adamw":
    opt = optax.adamw(schedule, b1=cfg["b1"], b2=cfg["b2"], eps=cfg["eps"],
                      weight_decay=cfg["weight_decay"], mask=mask)
  elif cfg["name"] == "lion":
    opt = optax.lion(schedule, b1=cfg["b1"], b2=cfg["b2"], weight_decay=cfg["weight_decay"],
                     mask=mask)
  else:
    opt = optax.adafactor(schedule, weight_decay_rate=cfg["weight_decay"] or None,
                          weight_decay_mask=mask)
  if cfg["clip_norm"]:
    opt = optax.chain(optax.clip_by_global_norm(cfg["clip_norm"]), opt)
  return opt, schedule
