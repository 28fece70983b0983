"""A seconds-long CPU smoke run of every switch: a tiny pondering model with pause tokens, a
procedural warm-up phase, then thought-augmented math and Shakespeare, on the byte vocabulary.
Used by the tests and as the first thing to run on a new machine:

  ponder-train --config=configs/smoke.py --workdir=/tmp/smoke
"""

from ponder_jax.data.pipeline import phase_config
from ponder_jax.data.sources import source_config
from ponder_jax.experiment import default_config


def get_config():
  c = default_config()
  c.model.update(family="neox", vocab_size=576, d_model=32, n_layers=2, n_heads=4, max_len=64)
  c.ponder.update(steps=1)
  c.data.vocab = "byte"
  c.data.seq_len = 64
  c.data.sources.dyck = source_config("procedural", task="dyck", k=4, length=32, eval_items=64)
  c.data.sources.math = source_config("math", thoughts=True, train_size=2000,
                                      validation_size=100, test_size=100)
  c.data.phases = dict(warmup=phase_config(4, dyck=1.0),
                       main=phase_config(0, math=1.0, shakespeare=1.0))
  c.data.phase_order = "warmup,main"
  c.data.pause.ratio = 0.1
  c.data.prefetch_batches = 0
  c.train.update(steps=16, global_batch_size=8, log_every=4, eval_every=0, eval_batches=1)
  c.optim.update(lr=3e-3, warmup_steps=4)
  c.checkpoint.update(every=10, keep=3, async_save=False)
  c.metrics.update(tensorboard=False, progress_bar=False, plot=False)
  return c
