"""Parameter counts and the FLOP convention, checked by hand."""

import pytest

from ponder_jax import accounting
from tests.helpers import init_params, tiny_config


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
def test_analytic_param_count_matches_the_built_model(family):
  cfg = tiny_config(family)
  _, params = init_params(cfg)
  assert accounting.count_params(params) == accounting.analytic_param_count(cfg)


def test_flops_match_a_hand_count():
  # neox, d=256, 4 layers, 4 heads (head 64), ff 1024, vocab 8192, seq 256, s=3.
  cfg = tiny_config("neox", d_model=256, n_layers=4, n_heads=4, vocab_size=8192, max_len=256)
  qkv = 2 * 256 * 768            # q, k, v projections
  out = 2 * 256 * 256            # attention output projection
  scores = (2 * 256 * 256 + 2 * 256 * 256) / 2  # QK^T and AV over 256 keys, causal halved
  mlp = 2 * 256 * 1024 * 2       # up and down
  head = 2 * 256 * 8192
  one_pass = 4 * (qkv + out + scores + mlp) + head
  assert one_pass == 4 * (393216 + 131072 + 131072 + 1048576) + 4194304 == 11010048
  mixture = 2 * 8192 * 256
  assert accounting.forward_flops_per_token(cfg, 256, 0) == one_pass
  assert accounting.training_flops_per_token(cfg, 256, 3) == 3 * (4 * one_pass + 3 * mixture)


@pytest.mark.parametrize("name, millions", [
    ("gpt2-small", 124.4), ("gpt2-medium", 354.8), ("pythia-70m", 70.4), ("pythia-160m", 162.3),
    ("pythia-410m", 405.3), ("pythia-1b", 1011.8), ("pythia-1.4b", 1414.6),
    ("tinyllama-1.1b", 1100.0),
])
def test_presets_have_their_published_sizes(name, millions):
  from ponder_jax import presets
  from ponder_jax.config import ModelConfig
  cfg = ModelConfig.from_config(presets.MODELS[name])
  assert abs(accounting.analytic_param_count(cfg) / 1e6 - millions) / millions < 0.01


class _FakeDevice:
  def __init__(self, platform, device_kind):
    self.platform, self.device_kind = platform, device_kind


@pytest.mark.parametrize("kind, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA L40S", 362e12), ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12), ("TPU v5p", 459e12), ("TPU v6 lite", 918e12),
    ("Some Future Chip", None)])
def test_peak_flops_table(kind, peak):
  platform = "tpu" if kind.startswith("TPU") else "gpu"
  assert accounting.peak_flops_per_device(_FakeDevice(platform, kind)) == peak


def test_mfu_against_the_measured_cpu_peak():
  peak = accounting.peak_flops_per_device()  # the CPU in tests: measured, cached
  assert 1e9 < peak < 1e13 and accounting.peak_flops_per_device() == peak
  assert accounting.mfu(1000.0, 2e9, n_devices=2, peak_per_device=4e12) == 0.25
  assert accounting.mfu(1000.0, 2e9, peak_per_device=None) == 1000.0 * 2e9 / peak
  assert accounting.mfu(1.0, 1.0, peak_per_device=0.0) == 1.0 / peak  # 0 means "look it up"
