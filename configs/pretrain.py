"""Pretraining a published architecture with pondering: `configs/pretrain.py:<preset>[,<slice>]`.

  ponder-train --config=configs/pretrain.py:pythia-410m --workdir=gs://bucket/run \
      --config.data.sources.shakespeare.path=/data/pile.txt --config.mesh.ici.fsdp=-1
  ponder-train --config=configs/pretrain.py:pythia-1b,v5litepod-16 --workdir=gs://bucket/run

Presets are ponder_jax/presets.py (gpt2-small|medium, pythia-70m|160m|410m|1b|1.4b, llama-1b,
tinyllama-1.1b). Defaults follow PonderLM's Pythia recipe (METHODS.md §1.4): s = 3 pondering
steps with scaled embeddings (and s * E0 from 410M up), AdamW (0.9, 0.95), cosine to 0.1x with
1% warmup, seq 2048, global batch 256, bf16 matmuls, scanned and rematerialised layers, FSDP over
every device. Switches: `--config.ponder.steps=0` (vanilla), `--config.data.pause.ratio=0.1`
(pause pretraining). The data section defaults to the shipped text so the config runs anywhere;
point `data.sources` at real corpora (text, jsonl, array_record or tfds sources) for real runs.

`,<slice>` (a Cloud TPU accelerator type or topology: v5litepod-16, v4-32, v5e:4x4, ...) adds the
sharding, remat and microbatching chosen for that slice in `SLICE_DEFAULTS` with `ponder-aot
--topology` (XLA's TPU compiler on a CPU host; benchmarks/tpu_aot.py and the table in
benchmarks/README.md): the step fits the chip's HBM with the best estimated step time.
"""

from ponder_jax import presets
from ponder_jax.experiment import default_config

# Peak learning rate and weight decay per size (PonderLM's Pythia runs).
_OPTIM = {"70m": (1e-3, 0.01), "160m": (6e-4, 0.01), "410m": (3e-4, 0.1), "1b": (2.5e-4, 0.01),
          "1.4b": (2e-4, 0.01), "1.1b": (1e-4, 0.01)}

# (preset, accelerator type) -> overrides, each with why, from `ponder-aot --topology` at the
# preset's s = 3 and global batch 256 x 2048 (benchmarks/README.md, "TPU slices"). Keys:
# rules (mesh.rules), ici (mesh.ici), microbatches (train.microbatches), remat_policy
# (model.remat_policy), ponder_remat (ponder.remat), scan_layers (model.scan_layers).
_FSDP = dict(data=1, fsdp=-1, tensor=1)
SLICE_DEFAULTS: dict[tuple[str, str], dict] = {
    ("pythia-1b", "v5litepod-16"): dict(
        rules="fsdp", ici=_FSDP, microbatches=4, remat_policy="full", ponder_remat=True,
        scan_layers=True,
        why="s=3 fits from 4 microbatches (12.2 GiB of 16; 2 need more); FSDP+TP4 needs 8 at "
            "s=3 and is estimated slower at s=0 (31% vs 17-62% MFU); full remat per layer and "
            "per pass is what fits at 4"),
    ("llama-1b", "v5litepod-16"): dict(
        rules="fsdp", ici=_FSDP, microbatches=4, remat_policy="full", ponder_remat=True,
        scan_layers=True,
        why="2 microbatches take 99% of HBM at s=0 (over the 97% limit); 4 fit at s=0 (55%) and "
            "s=3 (84%)"),
}

_SLICE_KEYS = {"rules": ("mesh", "rules"), "ici": ("mesh", "ici"),
               "microbatches": ("train", "microbatches"),
               "remat_policy": ("model", "remat_policy"), "ponder_remat": ("ponder", "remat"),
               "scan_layers": ("model", "scan_layers")}


def _slice_name(name: str) -> str:
  """'v5e:4x4', 'v5e-16', 'v5litepod-16' -> 'v5litepod-16' (ponder_jax.aot's parser)."""
  from ponder_jax.aot import parse_topology  # pylint: disable=import-outside-toplevel
  return parse_topology(name).accelerator_type


def slice_overrides(preset: str, slice_name: str) -> dict:
  """The SLICE_DEFAULTS entry of (preset, slice), or a ValueError naming the known ones."""
  key = (preset, _slice_name(slice_name))
  if key not in SLICE_DEFAULTS:
    known = sorted(f"{p},{s}" for p, s in SLICE_DEFAULTS)
    raise ValueError(f"no defaults for {preset} on {slice_name} (checked with ponder-aot "
                     f"--topology: {', '.join(known)}); run ponder-aot --topology={slice_name} "
                     f"to choose the mesh and microbatches, or leave out ',{slice_name}'")
  return SLICE_DEFAULTS[key]


def get_config(arg: str = "pythia-160m"):
  preset, _, slice_name = arg.partition(",")
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
  if slice_name:
    for key, value in slice_overrides(preset, slice_name).items():
      if key == "why":
        continue
      section, field = _SLICE_KEYS[key]
      if isinstance(value, dict):
        c[section][field].update(value)
      else:
        c[section][field] = value
  return c
