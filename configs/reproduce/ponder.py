"""Claim 1, PonderLM (METHODS.md §1): at equal parameters, pondering (s = 3) reaches a lower
held-out loss than the vanilla model and than pause tokens, close to a vanilla model with about
twice the parameters; and what each arm costs in training FLOPs per token.

  ponder-sweep --config=configs/reproduce/ponder.py:mechanics --workdir=runs/reproduce/ponder
  make reproduce-ponder TIER=claim

Arms (GPT-NeoX, SentencePiece 8,192 pieces, the shipped Shakespeare text, held-out loss on its
eval split): `vanilla` (s = 0), `ponder` (s = 3, E0 scaled by sqrt(d) as in the demo; PonderLM's
depth-scaled init for its own 4 passes), `pause` (pause tokens inserted at ratio 0.1 in training
and in the eval stream, so the model is scored as it was trained), `vanilla_2x` (twice the
layers: 2x the non-embedding parameters; with an 8k vocabulary and d 128 the embedding table is
most of a model this small, so both `params` and `non_embedding_params` are reported). Each arm
gets every LR of the tier and every seed; the report keeps each arm's best LR by the mean eval
loss over seeds.

Tiers: smoke (tests: seconds), mechanics (16 minutes on 2 shared CPU cores, 10 of them the s = 3
arm: shows the arms run and what they cost, not the claim), claim (the smallest setting in which
the team's calibration runs expect the ordering to separate from the noise: 25M tokens per run,
2 seeds x 3 LRs x 4 arms; GPU-sized, days of this 2-core CPU, so RESULTS.md reports it as not
run here).
"""

from ponder_jax import sweep
from ponder_jax.experiment import default_config

TIERS = {
    "smoke": dict(d=32, layers=1, heads=2, seq=32, batch=4, steps=3, seeds=(0,), lrs=(3e-3,)),
    "mechanics": dict(d=64, layers=2, heads=4, seq=128, batch=16, steps=300, seeds=(0,),
                      lrs=(3e-3,)),
    "claim": dict(d=128, layers=4, heads=4, seq=128, batch=32, steps=6000, seeds=(0, 1),
                  lrs=(1e-3, 3e-3, 6e-3)),
}


def get_config(arg: str = "mechanics"):
  _, t, _ = sweep.tier(arg, TIERS)
  c = default_config()
  c.model.update(family="neox", vocab_size=8192, d_model=t["d"], n_layers=t["layers"],
                 n_heads=t["heads"], max_len=t["seq"])
  c.ponder.update(steps=0, scale_embeds=True)
  c.data.seq_len = t["seq"]  # the shipped Shakespeare text alone (the default data section)
  c.train.update(steps=t["steps"], global_batch_size=t["batch"], log_every=max(1, t["steps"] // 30),
                 eval_every=0, eval_batches=8 if t["steps"] > 10 else 1)
  c.optim.update(warmup_steps=max(1, t["steps"] // 20), schedule="cosine", min_lr_ratio=0.1,
                 weight_decay=0.1)
  c.checkpoint.update(every=0, keep=1)
  c.metrics.update(tensorboard=False, plot=False, progress_bar=False)
  return c


def get_sweep(arg: str = "mechanics"):
  _, t, _ = sweep.tier(arg, TIERS)
  arms = sweep.arms(vanilla={}, ponder={"ponder.steps": 3},
                    pause={"data.pause.ratio": 0.1, "data.pause.in_eval": True},
                    vanilla_2x={"model.n_layers": 2 * t["layers"]})
  return sweep.product(arms, sweep.values("optim.lr", t["lrs"]),
                       sweep.values("train.seed", t["seeds"]))


def get_report(arg: str = "mechanics"):
  return sweep.Report(metrics=("eval/shakespeare/loss", "params", "non_embedding_params",
                               "flops_per_token", "train_flops", "seconds"),
                      select="eval/shakespeare/loss",
                      title=f"PonderLM claim, tier {arg}: held-out Shakespeare loss per arm")
