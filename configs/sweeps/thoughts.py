"""Ablation over the demo model: the math corpus with latent thoughts (BoLT's layout) or as raw
text.

ponder-sweep --config=configs/sweeps/thoughts.py --workdir=runs/sweeps/thoughts
"""

import os

from ponder_jax import sweep

DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "demo.py")


def get_config():
  return sweep.load_config(DEMO)


def get_sweep():
  return sweep.values("data.sources.math.thoughts", [False, True])
