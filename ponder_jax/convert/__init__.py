"""Hugging Face interop: GPT-2, GPT-NeoX (Pythia) and LLaMA checkpoints in and out, with logit
parity (hf.py), pondering models exported with their loop (modeling_ponder.py), the project's
tokenizers exported (tokenizer.py; Hugging Face tokenizers are read by data/vocab.py, re-exported
here), and the `ponder-convert` command (cli.py). Weight files are read by sources.py; per-family
layouts live in families.py."""

from ponder_jax.convert.hf import export_hf, import_hf, load_pretrained, read_ponder_config
from ponder_jax.convert.tokenizer import hf_vocabulary
from ponder_jax.data.vocab import HFVocabulary, load_hf_vocabulary

__all__ = ["export_hf", "import_hf", "load_pretrained", "read_ponder_config", "HFVocabulary",
           "hf_vocabulary", "load_hf_vocabulary"]
