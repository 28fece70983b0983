"""Inference: exact KV-cached generation for pondering models (one cache per ponder pass),
pause inference, teacher-forced scoring, and loading trained models (workdirs, HF dirs)."""

from ponder_jax.infer.engine import Engine
from ponder_jax.infer.generate import Generation, SamplingConfig
from ponder_jax.infer.score import Score

__all__ = ["Engine", "Generation", "SamplingConfig", "Score"]
