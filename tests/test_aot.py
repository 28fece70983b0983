"""Tests for ponder_jax/aot.py: the train step compiles for a target mesh on simulated devices,
and for a TPU topology with XLA's TPU compiler (libtpu) on this CPU host, each in its own
process, with the memory analysis and parameter shardings printed; a bad mesh, an unknown
topology or an over-budget step fails with a clear message and exit code."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from ponder_jax import aot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = os.path.join(ROOT, "tests", "configs", "tiny.py")

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (pip install -c constraints.txt -e '.[tpu]'; the Makefile "
           "installs it): XLA's TPU compiler is what compiles for a TPU topology")


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


@needs_libtpu
def test_compiles_for_a_tpu_topology_and_reports_memory_cost_and_shardings(tmp_path):
  report_path = tmp_path / "report.json"
  result = _aot(tmp_path, "--topology=v5e:2x2", "--config.mesh.ici.data=1",
                "--config.mesh.ici.fsdp=4", "--config.model.dtype=bfloat16", "--decode",
                f"--json={report_path}", "--hbm_gb=0.000001")
  out, err = result.stdout, result.stderr
  assert "for TPU v5e:2x2 (v5litepod-4, 4 chips of TPU v5 lite: 16 GiB HBM, 197 bf16" in out, err
  assert "TPU_ACCELERATOR_TYPE" not in err and "TPU_WORKER_HOSTNAMES" not in err  # quiet libtpu
  report = json.loads(report_path.read_text())
  assert report["chips"] == 4 and report["device_kind"] == "TPU v5 lite"
  assert report["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
  assert report["hbm_bytes_per_chip"] == 16 * 2 ** 30
  for step in ("train", "decode"):
    r = report[step]
    assert r["total_bytes_per_device"] == (
        r["argument_size_in_bytes"] + r["output_size_in_bytes"] - r["alias_size_in_bytes"]
        + r["temp_size_in_bytes"] + r["generated_code_size_in_bytes"]) > 0
    assert r["fits"] and r["xla_flops"] > 0 and r["step_seconds"] > 0
    assert r["alias_size_in_bytes"] > 0  # the state (train) and the cache (decode) are donated
  train = report["train"]
  assert train["argument_size_in_bytes"] >= report["param_bytes_per_device"]
  # No loops in this one-layer step: the executed FLOPs agree with XLA's own count.
  assert train["while_loops"] == 0 and train["loop_factor"] == pytest.approx(1.0)
  assert train["executed_flops_per_chip"] == pytest.approx(train["xla_flops"], rel=0.25)
  assert 0 < train["mfu"] < 1 and train["tokens_per_second_per_chip"] > 0
  assert train["tokens_per_chip"] == 8 * 32 / 4
  # Every parameter's sharding, as the trainer places it: FSDP splits d_model over 4 chips.
  params = {row[0]: row for row in report["params"]}
  assert params["token_embed"][1:] == [[576, 32], "float32", "P(None, 'fsdp')", [576, 8],
                                       576 * 8 * 4]
  assert params["lm_head"][3:5] == ["P('fsdp', None)", [8, 576]]
  for line in ("temporaries (activations)", "total (args+out-alias+temp+code)",
               "of the chip's 16 GiB HBM", "MFU", "decode step (one token for 8 rows over a "
               "32-slot cache, s=0)", "parameter shardings:"):
    assert line in out
  # --hbm_gb overrides the chip's HBM: the step is then refused, with the bytes it needs.
  assert result.returncode == 1
  assert (f"the train step does not fit: it needs {train['total_bytes_per_device']:,} bytes"
          in err)


@needs_libtpu
def test_a_mesh_that_does_not_match_the_topology_names_the_key(tmp_path):
  result = _aot(tmp_path, "--topology=v5e:2x2", "--config.mesh.ici.data=1",
                "--config.mesh.ici.fsdp=8")
  assert result.returncode == 2, result.stdout + result.stderr
  assert "invalid config: config key 'mesh.ici'" in result.stderr
  assert "needs 8 devices, but 4 are available (topology v5e:2x2" in result.stderr
  result = _aot(tmp_path, "--topology=v5e-4", "--slices=2")
  assert result.returncode == 2, result.stdout + result.stderr
  assert "config key 'mesh.dcn'" in result.stderr and "--config.mesh.dcn.data=2" in result.stderr


def test_an_unknown_topology_lists_the_accepted_forms(tmp_path):
  for name in ("v7x:2x2", "v5e:4x4x4", "tpu", "v4-33", "v5e-24"):
    with pytest.raises(aot.TopologyError, match="accepted forms: v4:AxBxC, v5p:AxBxC"):
      aot.parse_topology(name)
  result = _aot(tmp_path, "--topology=v9:2x2")
  assert result.returncode == 2
  assert "unknown TPU topology 'v9:2x2'; accepted forms: v4:AxBxC" in result.stderr
  assert "v5litepod-N" in result.stderr


def test_topology_names_resolve_to_slices():
  cases = {"v5e:4x4": ("v5e:4x4", "v5litepod-16", 16),
           "v5litepod-16": ("v5e:4x4", "v5litepod-16", 16),
           "v5e-256": ("v5e:16x16", "v5litepod-256", 256), "v4-32": ("v4:2x2x4", "v4-32", 16),
           "v5p-64": ("v5p:2x4x4", "v5p-64", 32), "V6E:8x8": ("v6e:8x8", "v6e-64", 64),
           "v4:2x2x2": ("v4:2x2x2", "v4-16", 8)}
  for name, (libtpu_name, accelerator, chips) in cases.items():
    topology = aot.parse_topology(name)
    assert (topology.name, topology.accelerator_type, topology.chips) == (
        libtpu_name, accelerator, chips)
  two = aot.parse_topology("v5e:4x4", slices=2)
  assert two.chips == 32 and two.topology_kwargs()["num_slices"] == 2
  assert aot.parse_topology("v4-128").topology_kwargs()["wrap"] == (True, True, True)
  assert aot.parse_topology("v4-32").topology_kwargs()["chip_config_name"] == "megacore"


@needs_libtpu
def test_libtpu_leaves_cpu_runs_alone():
  """With libtpu installed on a host without TPUs, importing the package keeps JAX on the CPU:
  no libtpu warnings, no libtpu process lock (which would make ponder-aot fail beside it)."""
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
  code = "import ponder_jax, jax; print(jax.default_backend())"
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=True)
  assert result.stdout.strip() == "cpu"
  assert "TPU" not in result.stderr, result.stderr


_LOOP_HLO = """\
HloModule jit_step

%fused_add (param_0.1: f32[8,128], param_1.1: f32[8,128]) -> f32[8,128] {
  %param_0.1 = f32[8,128]{1,0:T(8,128)} parameter(0)
  %param_1.1 = f32[8,128]{1,0:T(8,128)} parameter(1)
  ROOT %add.1 = f32[8,128]{1,0:T(8,128)} add(%param_0.1, %param_1.1)
}

%fused_slice (param_0.2: f32[16,8,128], param_1.2: s32[]) -> f32[1,8,128] {
  %param_0.2 = f32[16,8,128]{2,1,0:T(8,128)} parameter(0)
  %param_1.2 = s32[]{:T(128)} parameter(1)
  %c0 = s32[]{:T(128)} constant(0)
  ROOT %ds = f32[1,8,128]{2,1,0:T(8,128)} dynamic-slice(%param_0.2, %param_1.2, %c0, %c0)
}

%body (p.1: (s32[], f32[8,128], f32[16,8,128])) -> (s32[], f32[8,128], f32[16,8,128]) {
  %p.1 = STATE parameter(0)
  %i = s32[]{:T(128)} get-tuple-element(%p.1), index=0
  %x = f32[8,128]{1,0:T(8,128)} get-tuple-element(%p.1), index=1
  %w = f32[16,8,128]{2,1,0:T(8,128)} get-tuple-element(%p.1), index=2
  %slice = f32[1,8,128]{2,1,0:T(8,128)} fusion(%w, %i), kind=kLoop, calls=%fused_slice
  %vmem = f32[8,128]{1,0:T(8,128)S(1)} copy(%x)
  %y = f32[8,128]{1,0:T(8,128)} fusion(%x, %x), kind=kLoop, calls=%fused_add
  ROOT %t = STATE tuple(%i, %y, %w)
}

%cond (p.2: (s32[], f32[8,128], f32[16,8,128])) -> pred[] {
  %p.2 = STATE parameter(0)
  %c = s32[]{:T(128)} constant(16)
  %j = s32[]{:T(128)} get-tuple-element(%p.2), index=0
  ROOT %lt = pred[]{:T(512)} compare(%j, %c), direction=LT
}

ENTRY %main (a: f32[8,128], w: f32[16,8,128]) -> f32[8,128] {
  %a = f32[8,128]{1,0:T(8,128)} parameter(0)
  %w.1 = f32[16,8,128]{2,1,0:T(8,128)} parameter(1)
  %zero = s32[]{:T(128)} constant(0)
  %init = STATE tuple(%zero, %a, %w.1)
  %loop = STATE while(%init), condition=%cond, body=%body
  %out = f32[8,128]{1,0:T(8,128)} get-tuple-element(%loop), index=1
  %small = f32[2,3]{1,0:T(8,128)} negate(%out)
  ROOT %r = f32[8,128]{1,0:T(8,128)} all-reduce(%out), replica_groups={}, to_apply=%fused_add
}
""".replace("STATE", "(s32[]{:T(128)}, f32[8,128]{1,0:T(8,128)}, f32[16,8,128]{2,1,0:T(8,128)})")


def test_hlo_traffic_counts_loop_bodies_by_their_trip_count():
  tile = 8 * 128 * 4  # one f32[8,128] array
  traffic = aot.hlo_traffic(_LOOP_HLO)
  assert traffic["while_loops"] == 1 and traffic["unknown_trip_counts"] == 0
  per_iteration = (
      2 * tile + 4  # the dynamic-slice fusion reads its slice (not all 16 rows) and the
      # index, and writes the slice
      + tile  # the copy reads x; its result lives in on-chip memory S(1) and is not counted
      + 3 * tile)  # the add fusion: two operands, one result
  entry = (2 * tile  # negate: f32[2,3] is one padded (8, 128) tile in and out
           + 2 * tile)  # the all-reduce
  assert traffic["hbm_bytes"] == 16 * per_iteration + entry
  assert traffic["collective_bytes"] == tile


def _pretrain():
  """configs/pretrain.py as a module (configs/ is not a package)."""
  spec = importlib.util.spec_from_file_location("pretrain_config",
                                                os.path.join(ROOT, "configs", "pretrain.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_slice_defaults_apply_by_accelerator_type_or_topology():
  pretrain = _pretrain()
  assert pretrain.SLICE_DEFAULTS, "configs/pretrain.py has per-slice defaults"
  for (preset, accelerator), chosen in pretrain.SLICE_DEFAULTS.items():
    assert chosen.get("why"), f"{preset},{accelerator} says why"
    config = pretrain.get_config(f"{preset},{accelerator}")
    assert config.train.microbatches == chosen.get("microbatches", 1)
    assert config.mesh.rules == chosen.get("rules", "fsdp")
    assert aot.parse_topology(accelerator).accelerator_type == accelerator
  preset, accelerator = next(iter(pretrain.SLICE_DEFAULTS))
  shape = aot.parse_topology(accelerator).name  # e.g. v5e:4x4 names the same slice
  assert (pretrain.get_config(f"{preset},{shape}").to_dict()
          == pretrain.get_config(f"{preset},{accelerator}").to_dict())
  with pytest.raises(ValueError, match="no defaults for pythia-160m on v6e-256"):
    pretrain.get_config("pythia-160m,v6e-256")
  with pytest.raises(aot.TopologyError, match="accepted forms"):
    pretrain.get_config("pythia-1b,v9-16")


def test_a_step_the_tpu_compiler_refuses_reports_the_bytes_it_needs():
  error = RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required "
                       "for HLO temporaries (25.19G) exceeds available HBM (15.75G).")
  report = aot._out_of_memory(error, 16 * 2 ** 30)  # pylint: disable=protected-access
  assert not report["fits"]
  assert report["total_bytes_per_device"] == int(25.19 * 2 ** 30)
  assert report["available_bytes"] == int(15.75 * 2 ** 30)
  assert aot._out_of_memory(ValueError("shapes differ"), None) is None  # pylint: disable=protected-access
  assert not aot.fits(15.8 * 2 ** 30, 16 * 2 ** 30) and aot.fits(15.5 * 2 ** 30, 16 * 2 ** 30)
