"""Pause finetuning (PauseFT, METHODS.md §2.1) on the synthetic math corpus, question -> answer,
starting from a pretrained run: the second stage of a two-stage run.

  ponder-train --config=configs/demo.py --workdir=runs/demo                     # 1: pretrain
  ponder-train --config=configs/finetune_math.py --workdir=runs/demo-pauseft \\
      --config.init.from_checkpoint=runs/demo                                    # 2: finetune

The argument after ':' names the pretraining config (default configs/demo.py,
e.g. `--config=configs/finetune_math.py:configs/smoke.py`): its model, ponder and vocabulary
settings are kept, so the architecture is the checkpoint's. Every parameter is loaded from
`init.from_checkpoint` (all components, embeddings copied); the optimizer state, step count and
LR schedule start afresh. Rows are `<bos> question <pause> x M_ft answer <eos>` with the loss on
the answer and eos only (the `finetune` source kind, ponder_jax/data/sources.py).
"""

import os

from ponder_jax.data.pipeline import phase_config
from ponder_jax.data.sources import source_config
from ponder_jax.experiment import default_config
from ponder_jax.sweep import load_config

# M_ft, the pauses between question and answer (the pause paper tries 10 and 50 per task).
# M_ft = 0 is standard finetuning (StdFT): `--config.data.sources.math_ft.num_pauses=0`.
NUM_PAUSES = 10
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_config(pretrain_config: str = "configs/demo.py"):
  path = pretrain_config.partition(":")[0]
  if not os.path.exists(path):  # relative to the repository, wherever this runs from
    pretrain_config = os.path.join(_REPO, pretrain_config)
  c = load_config(pretrain_config)
  c.data.sources = {"math_ft": source_config("finetune", generator="math",
                                             num_pauses=NUM_PAUSES, train_size=20000)}
  c.data.phases = {"main": phase_config(0, math_ft=1.0)}
  c.data.phase_order = "main"
  c.data.pause.ratio = 0.0  # no inserted pauses (finetune sources never get any anyway)

  # The init defaults (every component, embeddings copied) whatever the pretraining config set.
  c.init = default_config().init
  c.init.from_checkpoint = "runs/demo"  # the pretrained workdir: override on the command line
  c.train.update(steps=100, eval_every=50)
  c.optim.update(lr=1e-3, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
  c.checkpoint.update(every=50)
  return c
