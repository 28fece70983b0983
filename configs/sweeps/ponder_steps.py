"""Ablation over the demo model: pondering steps s in {0, 1, 3} (0 is the vanilla model).

The arms differ only in `ponder.steps`. PonderLM scales the output projections' init std by
1 / sqrt(2 * layers * (s + 1)) (`ponder.depth_scaled_init`), which would also give every arm its
own init depth; `ponder.init_passes` pins it for all arms to that of the deepest arm (s = 3,
4 passes), so the vanilla arm is the same initial network as the pondering ones and only the
number of passes changes. To give each arm its own paper init instead (arms then differ in s
and in the init depth), pass `--config.ponder.init_passes=0`.

ponder-sweep --config=configs/sweeps/ponder_steps.py --workdir=runs/sweeps/ponder_steps
"""

import os

from ponder_jax import sweep

DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "demo.py")
STEPS = (0, 1, 3)


def get_config():
  c = sweep.load_config(DEMO)
  c.ponder.init_passes = max(STEPS) + 1  # one init for every arm: the s = 3 model's
  return c


def get_sweep():
  return sweep.values("ponder.steps", list(STEPS))
