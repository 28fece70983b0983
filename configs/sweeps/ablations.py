"""The full demo ablation grid: pondering steps {0, 1, 3} x pause ratio {0, 0.1} x procedural
warm-up off/on x thoughts off/on = 24 runs (each a few minutes on a CPU; --parallel on a
bigger machine, or --emit=tpu for a pod).

ponder-sweep --config=configs/sweeps/ablations.py --workdir=runs/sweeps/ablations --parallel=4
"""

import os

from ponder_jax import sweep

DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "demo.py")


def get_config():
  return sweep.load_config(DEMO)


def get_sweep():
  warmup_steps = sweep.load_config(DEMO).data.phases.warmup.steps
  return sweep.product(
      sweep.values("ponder.steps", [0, 1, 3]),
      sweep.values("data.pause.ratio", [0.0, 0.1]),
      sweep.values("data.phases.warmup.steps", [0, warmup_steps]),
      sweep.values("data.sources.math.thoughts", [False, True]),
  )
