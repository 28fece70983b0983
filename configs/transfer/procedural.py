"""The procedural paper's transfer protocol, run 1 of 2: a model trained on procedural data alone.

A small GPT-2 (the paper's family: learned positions, tied embeddings) trained on 16-Dyck words
only (METHODS.md §3.1 stage 1; the paper uses k = 64, length 2048, 12 layers and 501 steps: this
is the CPU-sized version). Its checkpoint is what `configs/transfer/downstream.py` takes
components from:

  ponder-train --config=configs/transfer/procedural.py --workdir=runs/transfer/procedural
  ponder-train --config=configs/transfer/downstream.py --workdir=runs/transfer/downstream \
      --config.init.from_checkpoint=runs/transfer/procedural

The downstream config copies this file's model section, so the copied tensors always match;
change the architecture here and both runs follow. Tokens per step (global_batch_size x
seq_len) are the same in both runs, so steps compare as tokens in the budgets.
"""

from ponder_jax.data.pipeline import phase_config
from ponder_jax.data.sources import source_config
from ponder_jax.experiment import default_config


def get_config():
  c = default_config()
  c.model.update(family="gpt2", vocab_size=576, d_model=64, n_layers=2, n_heads=4, max_len=128,
                 tie_embeddings=True)
  c.ponder.update(steps=0)  # the paper's transfer is about vanilla models
  c.data.vocab = "byte"  # the downstream run's vocabulary: procedural symbols are ids 9 .. 264
  c.data.seq_len = 128
  # One procedural task alone (the paper trains one task per warm-up model). No pauses: neither
  # paper puts pauses into procedural data.
  c.data.sources = dict(dyck=source_config("procedural", task="dyck", k=16, length=128,
                                           p_open=0.5))
  c.data.phases = dict(main=phase_config(0, dyck=1.0))
  c.data.phase_order = "main"
  c.data.pause.ratio = 0.0
  c.train.update(steps=200, global_batch_size=16, log_every=20, eval_every=0, eval_batches=2)
  # The paper's warm-up optimiser: constant LR, no warmup, weight decay 0.1 (a larger LR than
  # its 5e-4, for a model this small).
  c.optim.update(lr=2e-3, schedule="constant", warmup_steps=0, weight_decay=0.1)
  c.checkpoint.update(every=0, keep=1)  # only the final step is transferred
  return c
