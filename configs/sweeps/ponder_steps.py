"""Ablation over the demo model: pondering steps s in {0, 1, 3} (0 is the vanilla model).

ponder-sweep --config=configs/sweeps/ponder_steps.py --workdir=runs/sweeps/ponder_steps
"""

import os

from ponder_jax import sweep

DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "demo.py")


def get_config():
  return sweep.load_config(DEMO)


def get_sweep():
  return sweep.values("ponder.steps", [0, 1, 3])
