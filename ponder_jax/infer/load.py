"""A trained model, ready for inference, from wherever it was saved.

    load("runs/demo")            a trainer workdir (its newest checkpoint), checkpoints/ or a step
                                 dir; or a `ponder-convert --from-hf` checkpoint directory
    load("pythia-70m/")          a Hugging Face model directory (config.json + weights), plain or
                                 exported by ponder-convert with its ponder_* settings

Every source gives the model config, the params, the ponder settings it was trained with and its
vocabulary (convert/checkpoint.py and convert/hf.py read them); the result is an `Engine` with s
fixed (`ponder_steps`, default the trained `ponder.steps`).
"""

from __future__ import annotations

import dataclasses
import os

from jax.sharding import Mesh

from ponder_jax.convert import checkpoint as convert_checkpoint
from ponder_jax.convert import hf as convert_hf
from ponder_jax.data.vocab import Vocabulary, load_hf_vocabulary
from ponder_jax.infer.engine import Engine
from ponder_jax.model.transformer import Transformer


@dataclasses.dataclass
class Loaded:
  engine: Engine
  vocab: Vocabulary
  source: str  # what was read, for messages


def load(path: str, *, ponder_steps: int | None = None, mesh: Mesh | None = None,
         rules: str = "fsdp") -> Loaded:
  """Reads the model at `path` (see the module docstring); errors name the path."""
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such model directory (a trainer workdir, a checkpoint "
                            "or a Hugging Face model directory)")
  if os.path.isfile(os.path.join(path, "config.json")):
    cfg, params = convert_hf.import_hf(path)
    ponder = convert_hf.read_ponder_config(path)
    # A plain HF tokenizer lacks the project's reserved tokens: they are added past its table.
    vocab = load_hf_vocabulary(path, add_tokens=True)
    source = f"Hugging Face model {path}"
  else:
    loaded = convert_checkpoint.load(path)
    cfg, params, vocab, ponder = loaded.cfg, loaded.params, loaded.vocabulary, loaded.ponder
    if vocab is None:
      raise ValueError(f"{path}: the checkpoint names no vocabulary, so prompts cannot be "
                       "tokenized")
    source = f"checkpoint {path}"
  pause_id = vocab.pause_id if vocab.pause_id < cfg.vocab_size else None
  engine = Engine(Transformer(cfg), params, ponder, pad_id=vocab.pad_id, pause_id=pause_id,
                  vocab_size=min(vocab.vocab_size, cfg.vocab_size), ponder_steps=ponder_steps,
                  mesh=mesh, rules=rules)
  return Loaded(engine=engine, vocab=vocab, source=source)

