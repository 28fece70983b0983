"""The procedural paper's transfer protocol, run 2 of 2: a fresh model that starts from chosen
components of the procedural model (`configs/transfer/procedural.py`) and trains on text.

  ponder-train --config=configs/transfer/procedural.py --workdir=runs/transfer/procedural
  ponder-train --config=configs/transfer/downstream.py --workdir=runs/transfer/downstream \
      --config.init.from_checkpoint=runs/transfer/procedural

Without `init.from_checkpoint` the same config is the from-scratch baseline. What is transferred
(train/init.py) is two config values, set below for the paper's semantic setting and changed on
the command line for the other arms:

  init.components    attention           attention only
                     attention,mlp       attention + MLP
                     attention,mlp,norms + norms (default: the paper's C4 / code / math runs)
                     everything          + token table and learned positions (algorithmic tasks)
  init.embeddings    fresh               new token embeddings (default, the semantic runs)
                     mean                every row = the mean of the rows the procedural model
                                         trained (its Dyck symbols; the paper's "average")

The budget is the config argument (`downstream.py:additive`, the default, or
`downstream.py:substitutive`), as `data.budget` is for a warm-up phase inside one run:
  additive      train.steps = SEMANTIC_STEPS: the procedural steps come on top of the text budget
  substitutive  train.steps = SEMANTIC_STEPS - the procedural run's train.steps: they replace the
                first part of it, so both arms see the same total number of tokens
(both runs have the same tokens per step). An explicit --config.train.steps overrides either.
"""

import os

from ponder_jax import sweep
from ponder_jax.data.pipeline import phase_config
from ponder_jax.data.sources import source_config
from ponder_jax.experiment import default_config

PROCEDURAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "procedural.py")
SEMANTIC_STEPS = 400  # the text budget of the additive arm
BUDGETS = ("additive", "substitutive")


def get_config(budget: str = "additive"):
  if budget not in BUDGETS:
    raise ValueError(f"unknown budget {budget!r}; use downstream.py:additive or "
                     "downstream.py:substitutive")
  procedural = sweep.load_config(PROCEDURAL)
  c = default_config()
  c.model = procedural.model  # the same architecture, so every chosen tensor fits
  c.ponder = procedural.ponder
  c.data.vocab = procedural.data.vocab  # ids line up with the procedural model's symbols
  c.data.seq_len = procedural.data.seq_len
  c.data.sources = dict(shakespeare=source_config("text"))  # the shipped sample
  c.data.phases = dict(main=phase_config(0, shakespeare=1.0))
  c.data.phase_order = "main"

  c.init.from_checkpoint = ""  # the procedural run's workdir, given on the command line
  c.init.components = "attention,mlp,norms"  # or attention | attention,mlp | everything
  c.init.embeddings = "fresh"  # or mean
  c.init.embedding_rows = ""  # '' = the rows the procedural run trained (read from its config)

  steps = SEMANTIC_STEPS
  if budget == "substitutive":
    steps -= procedural.train.steps
  c.train.update(steps=steps, global_batch_size=procedural.train.global_batch_size,
                 log_every=20, eval_every=0, eval_batches=4)
  c.optim.update(lr=2e-3, schedule="cosine", warmup_steps=20, min_lr_ratio=0.1,
                 weight_decay=0.1)
  c.checkpoint.update(every=0, keep=1)
  return c
