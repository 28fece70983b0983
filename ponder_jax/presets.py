"""Model presets: published architectures as `model` config sections.

Use them from a config file (configs/pretrain.py:<name>) or in code:
`config.model.update(presets.MODELS['pythia-410m'])`. Pondering and pause tokens stay switches
of their own sections (`ponder.steps`, `data.pause.ratio`), so every preset runs vanilla,
pondering, pausing or both.
"""

from __future__ import annotations

_GPT2 = dict(family="gpt2", vocab_size=50304, max_len=1024, tie_embeddings=True,
             init_std=0.02, norm_eps=1e-5)
# init_std 0: PonderLM's small init
_PYTHIA = dict(family="neox", vocab_size=50304, max_len=2048, rotary_pct=0.25,
               tie_embeddings=False, init_std=0.0, norm_eps=1e-5)
_LLAMA = dict(family="llama", vocab_size=32000, max_len=2048, tie_embeddings=False,
              init_std=0.02, norm_eps=1e-5, rope_theta=10000.0)

MODELS: dict[str, dict] = {
    "gpt2-small": dict(_GPT2, d_model=768, n_layers=12, n_heads=12),
    "gpt2-medium": dict(_GPT2, d_model=1024, n_layers=24, n_heads=16),
    "pythia-70m": dict(_PYTHIA, d_model=512, n_layers=6, n_heads=8),
    "pythia-160m": dict(_PYTHIA, d_model=768, n_layers=12, n_heads=12),
    "pythia-410m": dict(_PYTHIA, d_model=1024, n_layers=24, n_heads=16),
    "pythia-1b": dict(_PYTHIA, d_model=2048, n_layers=16, n_heads=8),
    "pythia-1.4b": dict(_PYTHIA, d_model=2048, n_layers=24, n_heads=16),
    # LLaMA-style 1B (Llama-3.2-1B shapes with a 32k vocabulary).
    "llama-1b": dict(_LLAMA, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, d_ff=8192,
                     rope_theta=500000.0),
    "tinyllama-1.1b": dict(_LLAMA, d_model=2048, n_layers=22, n_heads=32, n_kv_heads=4,
                           d_ff=5632),
}
