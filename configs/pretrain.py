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
_FSDP_TP4 = dict(data=1, fsdp=-1, tensor=4)
_REMAT = dict(remat_policy="full", ponder_remat=True, scan_layers=True)
SLICE_DEFAULTS: dict[tuple[str, str], dict] = {
    ("pythia-160m", "v5litepod-16"): dict(
        rules="dp", ici=dict(data=-1, fsdp=1, tensor=1), microbatches=4, **_REMAT,
        why="replicated params (1.9 GB with AdamW) fit and spare FSDP's windowed einsums: "
            "estimated 17% MFU vs 8% with FSDP at s=3; s=3 needs 4 microbatches (12.7 GiB of "
            "16), s=0 fits in one"),
    ("pythia-410m", "v5litepod-16"): dict(
        rules="fsdp", ici=_FSDP, microbatches=4, **_REMAT,
        why="the fewest microbatches that fit s=3 (10.0 GiB of 16; 2 do not); the only sharding "
            "compiled for it"),
    ("pythia-410m", "v4-32"): dict(
        rules="fsdp", ici=_FSDP, microbatches=2, **_REMAT,
        why="s=3 fits at 2 microbatches (19.7 GiB of 32 per chip; 1 does not); the only sharding "
            "compiled for it"),
    ("pythia-1b", "v5litepod-16"): dict(
        rules="fsdp_tp", ici=_FSDP_TP4, microbatches=8, **_REMAT,
        why="FSDP x 4-way tensor parallelism at 8 microbatches (9.9 GiB of 16) is estimated at "
            "27% MFU at s=3 against 13% for FSDP at 4 and 14% at 8 (windowed einsums); FSDP with "
            "LIBTPU_INIT_ARGS disabling them is estimated at 55% (benchmarks/README.md); "
            "dots_no_batch remat needs 8 microbatches for no gain"),
    ("pythia-1.4b", "v5litepod-16"): dict(
        rules="fsdp", ici=_FSDP, microbatches=4, **_REMAT,
        why="the fewest microbatches that fit s=3 (13.5 GiB of 16; 2 do not); the only sharding "
            "compiled for it"),
    ("llama-1b", "v5litepod-16"): dict(
        rules="fsdp_tp", ici=_FSDP_TP4, microbatches=8, **_REMAT,
        why="FSDP x 4-way tensor parallelism at 8 microbatches (12.3 GiB of 16) is estimated at "
            "17% MFU at s=3 against 11% for FSDP at 4 (2 take 99% of HBM at s=0)"),
    ("tinyllama-1.1b", "v5litepod-16"): dict(
        rules="fsdp", ici=_FSDP, microbatches=4, **_REMAT,
        why="the fewest microbatches that fit s=3 (14.3 GiB of 16; 2 do not); the only sharding "
            "compiled for it"),
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
