"""Inference: exact KV-cached generation for pondering models (one cache per ponder pass),
pause inference, teacher-forced scoring, and loading trained models (workdirs, HF dirs)."""

from ponder_jax.infer.generate import Generation, Generator, SamplingConfig

__all__ = ["Generation", "Generator", "SamplingConfig"]
