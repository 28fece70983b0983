"""ponder-jax: data-efficient LM pretraining in JAX/Flax with pondering, pause tokens,
procedural warm-up data and latent thoughts."""

__version__ = "0.1.0"
