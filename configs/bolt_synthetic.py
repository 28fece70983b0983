"""BoLT's EM loop offline on the synthetic math corpus (`ponder-bolt`, ponder_jax/bolt/em.py).

    ponder-bolt --config=configs/bolt_synthetic.py --workdir=runs/bolt
    ponder-bolt --config=configs/bolt_synthetic.py --workdir=runs/bolt_k1 \
        --config.bolt.estep.num_samples=1

3-digit x 2-digit multiplication (the CALIBRATIONS.md testbed where thoughts carry information):
a warm start on 2,000 problems with their ground-truth derivations, then EM over 8,000 problems
whose derivations are hidden: the model writes them (K samples, importance resampling) and a fresh
model trains on them. The raw-only baseline trains on the same 10,000 problems without thoughts
for as many steps. Byte vocabulary, a 0.6M-parameter LLaMA-style model, no pondering (BoLT does
not ponder; `--config.ponder.steps=1` combines the two). About 45 minutes on 2 idle CPU cores.
"""

from ponder_jax.bolt.em import default_bolt_config
from ponder_jax.data.pipeline import phase_config
from ponder_jax.data.sources import source_config
from ponder_jax.experiment import default_config


def get_config():
  c = default_config()
  c.model.update(family="llama", vocab_size=576, d_model=128, n_layers=3, n_heads=4,
                 max_len=128)
  c.data.vocab = "byte"
  c.data.seq_len = 128
  # The corpus's kind and difficulty; the EM driver sets its size, seed and thought layout.
  c.data.sources = dict(math=source_config("math", kinds=("multiplication",),
                                           mul_digits=(3, 2), thoughts=True))
  c.data.phases = dict(main=phase_config(0, math=1.0))
  c.train.update(global_batch_size=32, log_every=100, eval_every=0, eval_batches=2)
  c.optim.update(lr=3e-3, warmup_steps=100, schedule="cosine", min_lr_ratio=0.1,
                 weight_decay=0.01)
  c.checkpoint.update(every=500, keep=1)
  c.metrics.update(tensorboard=False, plot=False)
  c.bolt = default_bolt_config()
  c.bolt.update(iterations=2, warmstart_problems=2000, warmstart_steps=1500,
                corpus_problems=8000, mstep_steps=800, eval_items=300)
  c.bolt.estep.update(num_samples=4, max_thought_tokens=48, batch_size=128,
                      docs_per_shard=2000)
  return c
