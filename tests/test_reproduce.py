"""The studies behind RESULTS.md (configs/reproduce/): every tier of every claim passes the sweep's
pre-flight check, and the smoke tier of every claim runs end to end through `ponder-sweep` and
writes its report, so the configs cannot rot."""

import json
import os
import subprocess
import sys

import pytest

from ponder_jax import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLAIMS = ("ponder", "pause", "procedural", "bolt", "combined")
# What each claim's full sweep holds at the claim tier: arms x LRs x seeds (and stages).
CLAIM_RUNS = {"ponder": 4 * 3 * 2, "pause": 2 * 2 * 2 * 3, "bolt": 2 * 2 * 2, "combined": 6 * 2 * 2,
              "procedural": 2 + 2 * 2 + 2 * 2 + 2 + 2 + 2 * 2}


def _path(claim: str) -> str:
  return os.path.join(ROOT, "configs", "reproduce", f"{claim}.py")


@pytest.mark.parametrize("claim", CLAIMS)
@pytest.mark.parametrize("tier", ("smoke", "mechanics", "claim"))
def test_every_tier_passes_the_preflight_check(claim, tier, tmp_path):
  config = f"{_path(claim)}:{tier}"
  run_plan = sweep.plan(config, str(tmp_path), sweep.load_stages(config))
  sweep.check(run_plan)
  reports = sweep.load_reports(config)
  assert reports and all(r.select in r.metrics for r in reports)
  if tier == "claim":
    assert len(run_plan) == CLAIM_RUNS[claim]
    seeds = {run.overrides.get("train.seed") for run in run_plan} - {None}
    assert len(seeds) >= 2, "the claim tier needs two seeds or more"


def test_combined_arms_spend_equal_training_flops():
  """Pondering costs more per token, so its arms train fewer steps for the same FLOPs."""
  from ponder_jax import accounting  # pylint: disable=import-outside-toplevel
  from ponder_jax.config import ModelConfig  # pylint: disable=import-outside-toplevel
  config = f"{_path('combined')}:claim"
  base = sweep.load_config(config)
  model = ModelConfig.from_config(base.model.to_dict())
  budgets = {}
  for run in sweep.load_sweep(config):
    per_token = accounting.training_flops_per_token(model, base.data.seq_len,
                                                    run.get("ponder.steps", 0))
    budgets[run["arm"]] = per_token * run["train.steps"]
  vanilla = budgets.pop("vanilla")
  for arm, flops in budgets.items():
    assert flops == pytest.approx(vanilla, rel=0.01), arm


@pytest.mark.parametrize("claim", CLAIMS)
def test_smoke_tier_runs_end_to_end(claim, tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu")
  workdir = tmp_path / claim
  result = subprocess.run(
      [sys.executable, "-m", "ponder_jax.sweep", f"--config={_path(claim)}:smoke",
       f"--workdir={workdir}"], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=900, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  rows = json.loads((workdir / "summary.json").read_text())
  assert rows and all(row["status"] == "ok" for row in rows)
  for report in sweep.load_reports(f"{_path(claim)}:smoke"):
    arms = json.loads((workdir / f"{report.name}.json").read_text())
    assert len(arms) >= 2 and all(arm["seeds"] >= 1 for arm in arms)
    for arm in arms:  # every reported number came from a run
      assert arm[report.select] is not None, (report.name, arm["arm"])
    assert (workdir / f"{report.name}.png").stat().st_size > 0
    assert report.title.split(",")[0] in result.stdout
