"""The smallest end-to-end run the subprocess tests start: one layer, byte vocabulary, the
shipped text, three steps. Tests add what they exercise with --config.* overrides."""

from ponder_jax.experiment import default_config


def get_config():
  c = default_config()
  c.model.update(dict(vocab_size=576, d_model=32, n_layers=1, n_heads=2, max_len=64))
  c.data.vocab = "byte"
  c.data.seq_len = 32
  c.train.update(dict(steps=3, global_batch_size=4, log_every=1, eval_batches=1))
  c.optim.warmup_steps = 1
  c.checkpoint.update(dict(every=0, async_save=False))
  c.metrics.update(dict(tensorboard=False, progress_bar=False, plot=False))
  return c
