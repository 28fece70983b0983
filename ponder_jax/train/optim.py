"""The optax chain built from the `optim` config section.

clip by global norm -> AdamW | Lion | Adafactor, with a learning-rate schedule (linear warmup,
then cosine, linear, WSD (warmup-stable-decay) or constant down to `min_lr_ratio * lr`) and a
weight-decay mask that skips norms and biases, and embeddings unless `decay_embeddings`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import ml_collections
import optax

from ponder_jax.validation import check, from_mapping

OPTIMIZERS = ("adamw", "lion", "adafactor")
SCHEDULES = ("cosine", "linear", "wsd", "constant")
_EMBEDDINGS = ("token_embed", "position_embed", "lm_head")


def default_optim_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dataclasses.asdict(OptimConfig()))


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """A validated `optim` section (`OptimConfig.from_config`)."""
  name: str = "adamw"  # OPTIMIZERS
  lr: float = 1e-3
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.01
  decay_embeddings: bool = False
  clip_norm: float = 1.0  # 0 disables clipping
  schedule: str = "cosine"  # SCHEDULES
  warmup_steps: int = 100
  min_lr_ratio: float = 0.1
  decay_fraction: float = 0.2  # wsd: the last fraction of steps decays

  @classmethod
  def from_config(cls, section: "OptimConfig | Mapping[str, Any]") -> "OptimConfig":
    """The section validated; raises ConfigError naming the bad key. An OptimConfig is taken
    as it is (it was validated when built)."""
    if isinstance(section, OptimConfig):
      return section
    return from_mapping(cls, section, "optim").validated()

  def validated(self) -> "OptimConfig":
    def ok(good, key, why):
      check(good, f"optim.{key}", getattr(self, key), why)
    ok(self.name in OPTIMIZERS, "name", f"must be one of {OPTIMIZERS}")
    ok(self.schedule in SCHEDULES, "schedule", f"must be one of {SCHEDULES}")
    ok(self.lr > 0, "lr", "must be positive")
    ok(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
    ok(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", "must lie in [0, 1]")
    ok(0.0 < self.decay_fraction <= 1.0, "decay_fraction", "must lie in (0, 1]")
    ok(self.weight_decay >= 0, "weight_decay", "must be >= 0")
    ok(self.clip_norm >= 0, "clip_norm", "must be >= 0 (0 disables clipping)")
    return self


def learning_rate_schedule(cfg: OptimConfig | Mapping[str, Any],
                           total_steps: int) -> optax.Schedule:
  cfg = OptimConfig.from_config(cfg)
  peak, floor = cfg.lr, cfg.lr * cfg.min_lr_ratio
  warmup = min(int(cfg.warmup_steps), max(total_steps - 1, 0))
  rest = max(total_steps - warmup, 1)
  if cfg.schedule == "constant":
    after = optax.constant_schedule(peak)
  elif cfg.schedule == "cosine":
    after = optax.cosine_decay_schedule(peak, rest, alpha=cfg.min_lr_ratio)
  elif cfg.schedule == "linear":
    after = optax.linear_schedule(peak, floor, rest)
  else:  # wsd: stable at the peak, then a linear decay over the last decay_fraction
    decay = max(int(round(rest * cfg.decay_fraction)), 1)
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


def make_optimizer(cfg: OptimConfig | Mapping[str, Any], total_steps: int):
  """Returns (optax transformation, learning-rate schedule)."""
  cfg = OptimConfig.from_config(cfg)
  schedule = learning_rate_schedule(cfg, total_steps)
  mask = lambda params: weight_decay_mask(params, cfg.decay_embeddings)
  if cfg.name == "adamw":
    opt = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                      weight_decay=cfg.weight_decay, mask=mask)
  elif cfg.name == "lion":
    opt = optax.lion(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=mask)
  else:
    opt = optax.adafactor(schedule, weight_decay_rate=cfg.weight_decay or None,
                          weight_decay_mask=mask)
  if cfg.clip_norm:
    opt = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)
  return opt, schedule
