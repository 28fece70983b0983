"""Ablation over the demo model: pause tokens inserted at ratio {0, 0.1} (pauses per token).

ponder-sweep --config=configs/sweeps/pause.py --workdir=runs/sweeps/pause
"""

import os

from ponder_jax import sweep

DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "demo.py")


def get_config():
  return sweep.load_config(DEMO)


def get_sweep():
  return sweep.values("data.pause.ratio", [0.0, 0.1])
