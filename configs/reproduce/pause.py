"""Claim 2, pause tokens (METHODS.md §2): pause pretraining + pause finetuning (PausePT + PauseFT)
beats standard pretraining + standard finetuning (StdPT + StdFT) on a multi-step task; removing
the pauses at inference (M_inf = 0) hurts the pause-pretrained model; pauses only at finetuning
(StdPT + PauseFT) do little.

  ponder-sweep --config=configs/reproduce/pause.py:mechanics --workdir=runs/reproduce/pause
  make reproduce-pause TIER=claim

Two stages. `pretrain` (this file's config): a LLaMA-style model with a byte vocabulary on the
shipped Shakespeare text and the synthetic math corpus (every kind, direct answers, no
thoughts), arms StdPT (no pauses) and PausePT (pauses inserted at ratio 0.1, METHODS.md §2.1).
`finetune` (`pause.py:<tier>,finetune`): every pretrained run is finetuned twice on question ->
answer pairs of a multi-step task (2-digit x 2-digit multiplication: a model this small answers
3 x 2 digits directly almost never, whatever the arm), arms StdFT (M_ft = 0) and
PauseFT (M_ft = 10 pauses between question and answer), all parameters from the pretrained
checkpoint, a fresh optimizer and schedule, the seed of the pretrained run. Each finetuned model
is scored by greedy exact match on held-out problems with M_inf = 0 (`math_direct`) and
M_inf = 10 (`math_direct@10`) pauses appended to the question. The pretraining LR is swept per
arm and chosen by the pretraining's held-out math loss (mean over seeds); only the pretrained runs
at their arm's best LR are finetuned (the report's `lr`). `accuracy` is the accuracy at the arm's
own M_inf (10 for PauseFT, 0 for StdFT).

Tiers: smoke (tests: seconds), mechanics (about 5 CPU-minutes: the 2 x 2 design runs end to end),
claim (d 128, 3 layers, 1,200 pretraining and 600 finetuning steps, 2 seeds x 2 LRs: 8
pretraining and 8 finetuning runs, about 45 minutes on 2 idle CPU cores).
"""

import os

from ponder_jax import sweep
from ponder_jax.data.pipeline import phase_config
from ponder_jax.data.sources import source_config
from ponder_jax.experiment import default_config

TIERS = {
    "smoke": dict(d=32, layers=1, heads=2, batch=4, pretrain=3, finetune=2, items=4,
                  seeds=(0,), lrs=(3e-3,)),
    "mechanics": dict(d=64, layers=2, heads=4, batch=32, pretrain=300, finetune=200, items=100,
                      seeds=(0,), lrs=(3e-3,)),
    "claim": dict(d=128, layers=3, heads=4, batch=32, pretrain=1200, finetune=600, items=300,
                  seeds=(0, 1), lrs=(1e-3, 3e-3)),
}
M = 10  # M_ft = M_inf: the pause paper's 10 pauses
PAUSE_RATIO = 0.1
TASK = dict(kinds=("multiplication",), mul_digits=(2, 2))


def get_config(arg: str = "mechanics"):
  _, t, part = sweep.tier(arg, TIERS, parts=("finetune",))
  c = default_config()
  c.model.update(family="llama", vocab_size=576, d_model=t["d"], n_layers=t["layers"],
                 n_heads=t["heads"], max_len=128)
  c.data.vocab = "byte"  # digits are tokens: arithmetic is not hidden in the pieces
  c.data.seq_len = 128
  c.data.sources.math = source_config("math", thoughts=False, train_size=50000)
  c.data.phases = dict(main=phase_config(0, math=0.5, shakespeare=0.5))
  c.data.pause.ratio = 0.0  # the PausePT arm sets PAUSE_RATIO
  c.train.update(steps=t["pretrain"], global_batch_size=t["batch"], eval_every=0,
                 log_every=max(1, t["pretrain"] // 30), eval_batches=4 if t["pretrain"] > 10 else 1)
  c.optim.update(warmup_steps=max(1, t["pretrain"] // 20), schedule="cosine", min_lr_ratio=0.1,
                 weight_decay=0.01)
  c.checkpoint.update(every=0, keep=1)
  c.metrics.update(tensorboard=False, plot=False, progress_bar=False)
  if part == "finetune":
    # The 2x2 problem space splits by question hash into about 7,300 train, 400 validation and
    # 400 test problems: the whole train share (train_size 0: drawn with repeats), 300 of each
    # held-out split (the eval items come from the test split).
    c.data.sources = {"task": source_config("finetune", generator="math", num_pauses=0,
                                            train_size=0, validation_size=300, test_size=300,
                                            **TASK)}
    c.data.phases = {"main": phase_config(0, task=1.0)}
    c.data.pause.ratio = 0.0  # finetune sources never get inserted pauses
    c.init.from_checkpoint = ""  # the pretrained run: set by the study's `after`
    c.train.update(steps=t["finetune"], log_every=max(1, t["finetune"] // 30),
                   eval_tasks=f"math_direct,math_direct@{M}", eval_items=t["items"])
    c.optim.update(lr=1e-3, warmup_steps=max(1, t["finetune"] // 20))
  return c


def get_sweep(arg: str = "mechanics"):
  tier, t, _ = sweep.tier(arg, TIERS, parts=("finetune",))
  pretrain = sweep.product(
      sweep.arms(StdPT={}, PausePT={"data.pause.ratio": PAUSE_RATIO}),
      sweep.values("optim.lr", t["lrs"]), sweep.values("train.seed", t["seeds"]))
  finetune = sweep.arms(StdFT={}, PauseFT={"data.sources.task.num_pauses": M})
  return [sweep.stage("pretrain", pretrain),
          sweep.stage("finetune", finetune, config=f"{os.path.abspath(__file__)}:{tier},finetune",
                      after="pretrain", inherit=("train.seed",), from_best="eval/math/loss")]


def get_report(arg: str = "mechanics"):
  return sweep.Report(
      metrics=("accuracy", "eval_tasks/math_direct/accuracy",
               f"eval_tasks/math_direct@{M}/accuracy", "eval/task/loss"),
      select="accuracy", higher_is_better=True, stage="finetune",
      title=f"Pause tokens, tier {arg}: exact match on held-out multi-step problems "
            f"(accuracy = at the arm's own M_inf: {M} for PauseFT, 0 for StdFT; lr = the "
            "pretraining LR)", derive=_own_accuracy)


def _own_accuracy(row):
  """The accuracy at the arm's own M_inf (PauseFT: M; StdFT: 0)."""
  key = f"eval_tasks/math_direct@{M}/accuracy" if "PauseFT" in str(row.get("arm")) \
      else "eval_tasks/math_direct/accuracy"
  return {"accuracy": row.get(key)}
