"""Claim 4, BoLT (METHODS.md §4): at equal raw data, training on thought-augmented data beats raw
data on held-out answer accuracy; EM iterations raise accuracy and the ELBO; more samples (K = 4
vs K = 1) help.

  ponder-sweep --config=configs/reproduce/bolt.py:mechanics --workdir=runs/reproduce/bolt
  make reproduce-bolt TIER=claim

Every run is `ponder-bolt` on configs/bolt_synthetic.py (3-digit x 2-digit multiplication, byte
vocabulary): a warm start on problems with their ground-truth derivations, then EM over problems
whose derivations are hidden, the raw baseline trained as long on the same problems without
thoughts. Arms: `K4` (4 thoughts per problem, importance resampled; the run also trains the raw
baseline) and `K1` (1 thought). The report gives, per arm, the accuracy after writing a
derivation (`accuracy_thought`) for the warm start, the raw baseline, the first and the last EM
iteration, and the ELBO per answer token of the first and last E-step.

Tiers: smoke (tests: seconds), mechanics (a 1-iteration loop at a quarter of the size: about
8 CPU-minutes; the numbers are not the claim), claim (configs/bolt_synthetic.py with two EM
iterations whose M-steps are as long as the warm start, 2 seeds x 2 LRs x 2 arms: about 8 hours
of this 2-core CPU).
"""

import os

from ponder_jax import sweep

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "bolt_synthetic.py")
TIERS = {
    "smoke": dict(d=32, layers=1, warm=(40, 3), corpus=16, mstep=3, iterations=1, items=4,
                  batch=8, seeds=(0,), lrs=(3e-3,)),
    "mechanics": dict(d=128, layers=3, warm=(1000, 400), corpus=1000, mstep=400, iterations=1,
                      items=100, batch=32, seeds=(0,), lrs=(3e-3,)),
    "claim": dict(d=128, layers=3, warm=(2000, 1500), corpus=8000, mstep=1500, iterations=2,
                  items=300, batch=32, seeds=(0, 1), lrs=(1e-3, 3e-3)),
}


def get_config(arg: str = "mechanics"):
  _, t, _ = sweep.tier(arg, TIERS)
  c = sweep.load_config(BASE)
  c.model.update(d_model=t["d"], n_layers=t["layers"])
  c.train.update(global_batch_size=t["batch"])
  c.metrics.update(progress_bar=False)
  problems, steps = t["warm"]
  c.bolt.update(iterations=t["iterations"], warmstart_problems=problems, warmstart_steps=steps,
                corpus_problems=t["corpus"], mstep_steps=t["mstep"], eval_items=t["items"])
  c.bolt.estep.update(docs_per_shard=max(t["corpus"] // 4, 1))
  return c


def get_sweep(arg: str = "mechanics"):
  _, t, _ = sweep.tier(arg, TIERS)
  arms = sweep.arms(K4={"bolt.estep.num_samples": 4},
                    K1={"bolt.estep.num_samples": 1, "bolt.baseline": False})
  runs = sweep.product(arms, sweep.values("optim.lr", t["lrs"]),
                       sweep.values("train.seed", t["seeds"]))
  return [sweep.stage("bolt", runs, program="bolt")]


def get_report(arg: str = "mechanics"):
  return sweep.Report(
      metrics=("bolt/warm_start/accuracy_thought", "bolt/raw_baseline/accuracy_direct",
               "bolt/em_1/accuracy_thought", "bolt/final/accuracy_thought",
               "bolt/em_1/elbo_per_token", "bolt/final/elbo_per_token"),
      select="bolt/final/accuracy_thought", higher_is_better=True,
      title=f"BoLT, tier {arg}: held-out accuracy (greedy, after writing a derivation) and "
            "ELBO per answer token")
