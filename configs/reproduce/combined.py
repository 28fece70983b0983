"""Claim 5, beyond the papers: the four methods combined against the best single method at equal
training FLOPs. No paper has tried it; RESULTS.md reports whichever way it comes out.

  ponder-sweep --config=configs/reproduce/combined.py:mechanics --workdir=runs/reproduce/combined
  make reproduce-combined TIER=claim

The demo's model and data (GPT-NeoX, SentencePiece 8,192, the synthetic math corpus mixed half and
half with the shipped Shakespeare text), every method switched off in the base. Arms: `vanilla`;
one method each: `ponder` (s = 1), `pause` (ratio 0.1), `procedural` (the first eighth of the
steps on 16-Dyck, taken out of the budget: data.budget = substitutive), `thoughts` (the math
corpus with latent thoughts); and `combined` (all four). Equal training FLOPs: each arm trains
`round(budget / (FLOPs per token x tokens per step))` steps, the budget being the vanilla arm's
steps of the tier at its FLOPs per token (accounting.py; pondering costs more per token, so the
pondering arms take fewer steps). Metrics: held-out Shakespeare loss (the same tokens for every
arm: pauses stay out of the eval stream) and math answer accuracy by greedy generation, in the
arm's own layout (`math_thought` where the model was trained with thoughts, else
`math_direct`): the column `math_accuracy`.

Tiers: smoke (tests: seconds), mechanics (about 8 CPU-minutes), claim (d 128, 4 layers, the
vanilla arm's 6,000 steps, 2 seeds x 2 LRs x 6 arms: GPU-sized, not run on this CPU).
"""

import os

from ponder_jax import accounting, sweep
from ponder_jax.config import ModelConfig

DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "demo.py")
TIERS = {
    "smoke": dict(d=32, layers=1, heads=2, batch=4, steps=8, items=4, seeds=(0,), lrs=(3e-3,)),
    "mechanics": dict(d=64, layers=2, heads=4, batch=16, steps=400, items=64, seeds=(0,),
                      lrs=(3e-3,)),
    "claim": dict(d=128, layers=4, heads=4, batch=32, steps=6000, items=300, seeds=(0, 1),
                  lrs=(1e-3, 3e-3)),
}
PONDER = {"ponder.steps": 1}
PAUSE = {"data.pause.ratio": 0.1}
THOUGHTS = {"data.sources.math.thoughts": True}


def get_config(arg: str = "mechanics"):
  _, t, _ = sweep.tier(arg, TIERS)
  c = sweep.load_config(DEMO)
  c.model.update(d_model=t["d"], n_layers=t["layers"], n_heads=t["heads"])
  c.ponder.update(steps=0)
  c.data.pause.ratio = 0.0
  c.data.sources.math.thoughts = False
  c.data.phases.warmup.steps = 0  # the procedural arms set it
  c.data.budget = "substitutive"  # warm-up steps count against train.steps: equal FLOPs
  c.train.update(steps=t["steps"], global_batch_size=t["batch"], eval_every=0,
                 log_every=max(1, t["steps"] // 30), eval_tasks="math_direct,math_thought",
                 eval_items=t["items"], eval_batches=4 if t["steps"] > 10 else 1)
  c.optim.update(warmup_steps=max(1, t["steps"] // 20))
  c.checkpoint.update(every=0, keep=1)
  c.metrics.update(tensorboard=False, plot=False, progress_bar=False)
  return c


def _equal_flops(overrides: dict, c, t, warmup: bool) -> dict:
  """The arm's overrides plus the steps that spend the vanilla arm's training FLOPs (and, with
  `warmup`, the first eighth of them on Dyck)."""
  model = ModelConfig.from_config(c.model.to_dict())
  per_token = accounting.training_flops_per_token(model, c.data.seq_len,
                                                  overrides.get("ponder.steps", 0))
  vanilla = accounting.training_flops_per_token(model, c.data.seq_len, 0)
  steps = max(1, round(t["steps"] * vanilla / per_token))
  out = {**overrides, "train.steps": steps}
  if warmup:
    out["data.phases.warmup.steps"] = max(1, steps // 8)
  return out


def get_sweep(arg: str = "mechanics"):
  _, t, _ = sweep.tier(arg, TIERS)
  c = get_config(arg)
  arms = dict(vanilla={}, ponder=PONDER, pause=PAUSE, procedural={}, thoughts=THOUGHTS,
              combined={**PONDER, **PAUSE, **THOUGHTS})
  with_warmup = ("procedural", "combined")
  arms = sweep.arms(**{name: _equal_flops(o, c, t, name in with_warmup)
                       for name, o in arms.items()})
  return sweep.product(arms, sweep.values("optim.lr", t["lrs"]),
                       sweep.values("train.seed", t["seeds"]))


def _math_accuracy(row):
  own = "math_thought" if row.get("arm") in ("thoughts", "combined") else "math_direct"
  return {"math_accuracy": row.get(f"eval_tasks/{own}/accuracy")}


def get_report(arg: str = "mechanics"):
  return sweep.Report(
      metrics=("eval/shakespeare/loss", "math_accuracy", "step", "train_flops", "seconds"),
      select="eval/shakespeare/loss", derive=_math_accuracy,
      title=f"Combined vs single methods, tier {arg}, at equal training FLOPs")
