"""Claim 3, procedural pretraining (METHODS.md §3): a 2-layer model trained from scratch on
needle-in-a-haystack stays near chance, while one warmed up on Dyck (converged) and transferred
(attention only) solves it (paper: ~10% -> ~98%); and front-loading procedural data reaches a
target text loss with fewer text tokens (the additive and substitutive budgets).

  ponder-sweep --config=configs/reproduce/procedural.py:mechanics \
      --workdir=runs/reproduce/procedural
  make reproduce-procedural TIER=claim

Needle (report `needle`): stage `dyck` trains the paper's small GPT-2 (2 layers, 4 heads,
d 16, byte vocabulary) on 16-Dyck alone (`procedural.py:<tier>,dyck`); stage `needle_scratch`
trains the same architecture on the needle task from a random init, `needle_transfer` from the
Dyck model's attention weights only (fresh embeddings, MLP and norms: METHODS.md §3.2). Both
are scored by greedy exact match on the needle answer (`eval_tasks/needle/exact_match`, at the
trained haystack size and twice it). Chance is 1/127 per value.

Text (report `text`): stage `dyck_text` is configs/transfer/procedural.py (GPT-2, d 64, Dyck
alone); `text_scratch` is configs/transfer/downstream.py from a random init; `text_transfer`
starts from the Dyck model's attention + MLP + norms, with T text steps on top of the Dyck
steps (`additive`) or T - D of them, the same total steps (`substitutive`). The report gives
the held-out Shakespeare loss and the text steps each arm trained.

Tiers: smoke (tests: seconds), mechanics (about 6 CPU-minutes: every stage runs; Dyck is far
from converged, so this is not the claim), claim (calibration runs: the gain needs Dyck trained
to within ~0.1 nat of its optimum and the paper's task budget, batch 1,000 x 10k steps: several
CPU-hours per run, minutes on a GPU; RESULTS.md reports it as not run on this CPU).
"""

import os

from ponder_jax import sweep
from ponder_jax.data.pipeline import phase_config
from ponder_jax.data.sources import source_config
from ponder_jax.experiment import default_config

TIERS = {
    "smoke": dict(dyck=3, needle=3, batch=8, items=4, dyck_text=2, text=3, seeds=(0,),
                  lrs=(3e-3,)),
    "mechanics": dict(dyck=400, needle=400, batch=64, items=64, dyck_text=100, text=300,
                      seeds=(0,), lrs=(3e-3,)),
    "claim": dict(dyck=20000, needle=10000, batch=1000, items=500, dyck_text=2000, text=8000,
                  seeds=(0, 1), lrs=(1e-3, 3e-3)),
}
PARTS = ("dyck", "needle")
TRANSFER = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "transfer")
MAX_PAIRS = 30  # the paper's condattendstream_30


def get_config(arg: str = "mechanics"):
  """The needle model: trained on the needle task (part 'needle', the default) or on Dyck."""
  _, t, part = sweep.tier(arg, TIERS, parts=PARTS)
  c = default_config()
  c.model.update(family="gpt2", vocab_size=576, d_model=16, n_layers=2, n_heads=4, max_len=64,
                 tie_embeddings=True)
  c.data.vocab = "byte"  # procedural symbols are ids 9 .. 264 in every run: the ids line up
  c.data.seq_len = 64  # one needle item (2 * 30 + 3 tokens) per row
  if part == "dyck":
    c.data.sources = dict(dyck=source_config("procedural", task="dyck", k=16, length=64,
                                             p_open=0.5))
  else:
    c.data.sources = dict(needle=source_config("procedural", task="needle",
                                               max_pairs=MAX_PAIRS))
    c.train.update(eval_tasks="needle", eval_items=t["items"])
  task = next(iter(c.data.sources))
  c.data.phases = {"main": phase_config(0, **{task: 1.0})}
  c.data.phase_order = "main"
  steps = t["dyck"] if part == "dyck" else t["needle"]
  c.train.update(steps=steps, global_batch_size=t["batch"], log_every=max(1, steps // 30),
                 eval_every=0, eval_batches=2)
  # The paper's procedural optimiser: constant LR after a short warmup, weight decay 0.1.
  c.optim.update(lr=3e-3, schedule="constant", warmup_steps=max(1, steps // 50),
                 weight_decay=0.1)
  c.checkpoint.update(every=0, keep=1)
  c.metrics.update(tensorboard=False, plot=False, progress_bar=False)
  return c


def get_sweep(arg: str = "mechanics"):
  tier, t, _ = sweep.tier(arg, TIERS, parts=PARTS)
  here = os.path.abspath(__file__)
  seeds, lrs = sweep.values("train.seed", t["seeds"]), sweep.values("optim.lr", t["lrs"])
  fresh = {"init.components": "attention", "init.embeddings": "fresh"}
  text_steps = {"train.steps": t["text"]}
  return [
      sweep.stage("dyck", sweep.product(seeds), config=f"{here}:{tier},dyck"),
      sweep.stage("needle_scratch", sweep.product(sweep.arms(scratch={}), lrs, seeds),
                  config=f"{here}:{tier},needle"),
      sweep.stage("needle_transfer", sweep.product(sweep.arms(dyck_attention=fresh), lrs),
                  config=f"{here}:{tier},needle", after="dyck", inherit=("train.seed",)),
      sweep.stage("dyck_text", sweep.product(seeds, [{"train.steps": t["dyck_text"]}]),
                  config=os.path.join(TRANSFER, "procedural.py")),
      sweep.stage("text_scratch", sweep.product(sweep.arms(scratch=text_steps), seeds),
                  config=os.path.join(TRANSFER, "downstream.py")),
      sweep.stage("text_transfer", sweep.arms(
          additive=text_steps,
          substitutive={**text_steps, "train.steps": t["text"] - t["dyck_text"]}),
          config=os.path.join(TRANSFER, "downstream.py"), after="dyck_text",
          inherit=("train.seed",)),
  ]


def get_report(arg: str = "mechanics"):
  return [
      sweep.Report(metrics=("eval_tasks/needle/exact_match", "eval/needle/loss"),
                   select="eval_tasks/needle/exact_match", higher_is_better=True,
                   stage=("needle_scratch", "needle_transfer"), name="needle",
                   title=f"Procedural warm-up, tier {arg}: needle-in-a-haystack exact match "
                         "from scratch vs from a Dyck model's attention"),
      sweep.Report(metrics=("eval/shakespeare/loss", "step"), select="eval/shakespeare/loss",
                   stage=("text_scratch", "text_transfer"), name="text",
                   title=f"Procedural warm-up, tier {arg}: held-out text loss after T text "
                         "steps (additive) or T - D (substitutive)"),
  ]
