"""Pretraining a published architecture with pondering: `configs/pretrain.py:<preset>`.

  ponder-train --config=configs/pretrain.py:pythia-410m --workdir=gs://bucket/run \
      --config.data.sources.shakespeare.path=/data/pile.txt --config.mesh.ici.fsdp=-1

Presets are ponder_jax/presets.py (gpt2-small|medium, pythia-70m|160m|410m|1b|1.4b, llama-1b,
tinyllama-1.1b). Defaults follow PonderLM's Pythia recipe (METHODS.md §1.4): s = 3 pondering
steps with scaled embeddings (and s * E0 from 410M up), AdamW (0.9, 0.95), cosine to 0.1x with
1% warmup, seq 2048, bf16 matmuls, scanned and rematerialised layers. Switches:
`--config.ponder.steps=0` (vanilla), `--config.data.pause.ratio=0.1` (pause pretraining).
The data section defaults to the shipped text so the config runs anywhere; point
`data.sources` at real corpora (text, jsonl, array_record or tfds sources) for real runs.
"""

from ponder_jax import presets
from ponder_jax.experiment import default_config

# Peak learning rate and weight decay per size (PonderLM's Pythia runs).
_OPTIM = {"70m": (1e-3, 0.01), "160m": (6e-4, 0.01), "410m": (3e-4, 0.1), "1b": (2.5e-4, 0.01),
          "1.4b": (2e-4, 0.01), "1.1b": (1e-4, 0.01)}


def get_config(preset: str = "pythia-160m"):
  if preset not in presets.MODELS:
    raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(presets.MODELS)}")
  c = default_config()
  c.model.update(presets.MODELS[preset])
  c.model.update(dtype="bfloat16", scan_layers=True, remat_policy="full")
  size = preset.rsplit("-", 1)[1]
  large = size in ("410m", "1b", "1.4b", "1.1b")
  c.ponder.update(steps=3, scale_embeds=True, multiply_initial=large)
  c.data.seq_len = c.model.max_len
  lr, wd = _OPTIM.get(size, (3e-4, 0.01))
  c.train.update(steps=100_000, global_batch_size=256, log_every=50, eval_every=2000,
                 eval_batches=16)
  c.optim.update(name="adamw", lr=lr, b1=0.9, b2=0.95, weight_decay=wd, schedule="cosine",
                 warmup_steps=1000, min_lr_ratio=0.1, clip_norm=1.0)
  c.checkpoint.update(every=1000, keep=3, keep_period=10_000)
  c.mesh.update(ici=dict(data=1, fsdp=-1, tensor=1), rules="fsdp")
  return c
