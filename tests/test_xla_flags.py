"""Recommended XLA flags merge into XLA_FLAGS without overriding the user's."""

import os
import subprocess
import sys

from ponder_jax import xla_flags


def test_merged_keeps_user_flags_and_adds_missing_ones():
  user = "--xla_gpu_enable_latency_hiding_scheduler=false --xla_dump_to=/tmp/x"
  got = xla_flags.merged(user, ("--xla_gpu_enable_latency_hiding_scheduler=true",
                                "--xla_cpu_use_fusion_emitters=true"))
  assert got.split() == ["--xla_gpu_enable_latency_hiding_scheduler=false", "--xla_dump_to=/tmp/x",
                         "--xla_cpu_use_fusion_emitters=true"]
  assert xla_flags.merged("", ()) == ""


def test_apply_in_a_fresh_process_is_accepted_by_xla():
  # Every recommended flag must parse in this jaxlib (XLA aborts on unknown flags), and the
  # allocator setting must leave computations correct.
  code = ("from ponder_jax import xla_flags; flags = xla_flags.apply();"
          "import jax, jax.numpy as jnp;"
          "x = jnp.ones((512, 512)); assert float((x @ x).sum()) == 512.0 ** 3;"
          "print(xla_flags.tune_host_allocator(), flags)")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True, timeout=300).stdout
  for flag in (f for p in xla_flags.RECOMMENDED.values() for f in p):
    assert flag in out
