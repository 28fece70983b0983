"""The embedded default: `make demo` trains this on 2 CPU cores in under 10 minutes.

A small pondering GPT-NeoX (Pythia-style) model with pause tokens, warmed up on procedural
k-Dyck data (the procedural paper's front-loading), then trained on a mixture of the synthetic
math corpus with latent thoughts (BoLT's format) and the shipped Shakespeare sample. Every
method is a switch: `--config.ponder.steps=0`, `--config.data.pause.ratio=0`,
`--config.data.phases.warmup.steps=0`, `--config.data.sources.math.thoughts=False`.
The final eval covers every source, Dyck included: its loss climbs back once the warm-up phase
ends, because front-loaded procedural data is not seen again (the paper's setting); what the
warm-up is for is the math and text losses after it.
"""

from ponder_jax.data.pipeline import phase_config
from ponder_jax.data.sources import source_config
from ponder_jax.experiment import default_config


def get_config():
  c = default_config()
  c.model.update(family="neox", vocab_size=8192, d_model=128, n_layers=3, n_heads=4,
                 max_len=128, init_std=0.0)
  c.ponder.update(steps=1, scale_embeds=True)

  c.data.vocab = "sentencepiece"
  c.data.seq_len = 128
  c.data.sources.dyck = source_config("procedural", task="dyck", k=16, length=128, p_open=0.5)
  c.data.sources.math = source_config("math", thoughts=True, train_size=20000)
  c.data.phases = dict(
      warmup=phase_config(40, dyck=1.0),  # procedural only, first 40 steps
      main=phase_config(0, math=0.5, shakespeare=0.5),
  )
  c.data.phase_order = "warmup,main"
  c.data.budget = "additive"  # 40 warm-up steps on top of train.steps
  c.data.pause.ratio = 0.1

  c.train.update(steps=260, global_batch_size=16, log_every=10, eval_every=100,
                 eval_batches=4)
  # Answer accuracy by generation and multiple choice at every eval (ponder_jax/eval/tasks.py);
  # `make demo` runs the full set on the final checkpoint with ponder-eval.
  c.train.update(eval_tasks="math_direct,math_choice", eval_items=32)
  c.optim.update(lr=3e-3, warmup_steps=30, schedule="cosine", min_lr_ratio=0.1,
                 weight_decay=0.01)
  c.checkpoint.update(every=100, keep=2)
  return c
