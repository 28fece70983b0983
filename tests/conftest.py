"""Test setup: 8 simulated CPU devices for the sharding tests, set before jax is imported."""

import os
import tempfile

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = f"{_flags} --xla_force_host_platform_device_count=8".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA:CPU compiles dominate the suite's time and many tests (and the trainer subprocesses they
# start, which inherit these variables) compile identical programs: share a persistent cache.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "ponder_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402  (after XLA_FLAGS)

jax.config.update("jax_default_matmul_precision", "highest")
# XLA:CPU compiles threefry slowly (~0.3 s per random op): rbg keys cut a model init's compile
# from ~6 s to ~1.5 s. Only the random bits change; every test compares like with like.
jax.config.update("jax_default_prng_impl", "rbg")


def pytest_configure(config):
  # ml-collections loads config files with the deprecated SourceFileLoader.load_module(): its
  # warning, once per loaded config, is not ours to fix.
  config.addinivalue_line("filterwarnings",
                          "ignore:the load_module\\(\\) method is deprecated:DeprecationWarning")
