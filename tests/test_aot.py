"""Tests for ponder_jax/aot.py: the train step compiles for a target mesh on simulated devices in
its own process, with the memory analysis and parameter shardings printed, and a bad mesh or an
over-budget step fails with a clear message and exit code."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = os.path.join(ROOT, "tests", "configs", "tiny.py")


def _aot(tmp_path, *args):  # pylint: disable=unused-argument
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # aot sets its own count
  env["JAX_DEFAULT_PRNG_IMPL"] = "rbg"  # as conftest: compiles faster
  return subprocess.run([sys.executable, "-m", "ponder_jax.aot", f"--config={TINY}",
                         "--config.train.global_batch_size=8", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                        check=False)


def test_compiles_for_a_target_mesh_and_reports_memory_and_shardings(tmp_path):
  result = _aot(tmp_path, "--devices=4", "--config.mesh.ici.data=1", "--config.mesh.ici.fsdp=4",
                "--hbm_gb=0.000001")
  out = result.stdout
  assert "on 4 simulated devices" in out, result.stderr[-3000:]
  assert "mesh: data=1 fsdp=4 tensor=1   rules: fsdp" in out
  for line in ("arguments", "outputs", "temporaries (activations)", "total (args+out-alias+temp)"):
    assert line in out
  total = re.search(r"total \(args\+out-alias\+temp\)\s+([\d.]+) (B|KiB|MiB|GiB)", out)
  assert total and float(total.group(1)) > 0
  # The FSDP rule splits the embedding's model dimension over the 4 devices.
  row = next(line for line in out.splitlines() if line.strip().startswith("token_embed"))
  assert "(576, 32)" in row and "'fsdp'" in row and "(576, 8)" in row
  # The budget check turns the estimate into a failure.
  assert result.returncode == 1
  assert "per device, more than --hbm_gb=1e-06" in result.stderr


def test_a_mesh_that_does_not_fit_the_devices_names_the_key(tmp_path):
  result = _aot(tmp_path, "--devices=4", "--config.mesh.ici.fsdp=3")
  assert result.returncode == 2, result.stdout + result.stderr
  assert "invalid config: config key 'mesh.ici'" in result.stderr
  assert "cannot fill to 4 devices" in result.stderr
