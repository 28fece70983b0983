"""Ablation over the demo model: procedural (k-Dyck) warm-up off / on.

The demo's budget is additive, so the warm-up run trains its 40 procedural steps on top of the
same train.steps of natural data: both runs see the same natural tokens.

ponder-sweep --config=configs/sweeps/warmup.py --workdir=runs/sweeps/warmup
"""

import os

from ponder_jax import sweep

DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "demo.py")


def get_config():
  return sweep.load_config(DEMO)


def get_sweep():
  warmup_steps = sweep.load_config(DEMO).data.phases.warmup.steps
  return sweep.values("data.phases.warmup.steps", [0, warmup_steps])
