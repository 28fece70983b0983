"""Hugging Face interop: GPT-2, GPT-NeoX (Pythia) and LLaMA checkpoints in and out, with logit
parity (hf.py), their tokenizers as a `Vocabulary` (tokenizer.py), and the `ponder-convert`
command (cli.py). Weight files are read by sources.py; per-family layouts live in families.py."""

from ponder_jax.convert.hf import export_hf, import_hf, load_pretrained
from ponder_jax.convert.tokenizer import HFVocabulary, load_hf_vocabulary

__all__ = ["export_hf", "import_hf", "load_pretrained", "HFVocabulary", "load_hf_vocabulary"]
