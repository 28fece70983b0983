"""Sweeps and studies: many runs of one config file, each with its own overrides.

A config file defines `get_sweep()` next to `get_config()` (the language: dsl.py), and
`ponder-sweep` (cli.py) checks, runs (runner.py) and summarises (summary.py) its runs:

    from ponder_jax import sweep
    def get_sweep():
      return sweep.product(sweep.values("ponder.steps", [0, 1, 3]),
                           sweep.values("data.pause.ratio", [0.0, 0.1]))   # 6 runs

A study (configs/reproduce/) chains stages (`sweep.stage(..., after=...)`), names arms
(`sweep.arms`) and defines `get_report()` returning a `sweep.Report`.
"""

from ponder_jax.sweep.cli import main
from ponder_jax.sweep.dsl import ARM, Override, Stage, SweepError, arms, as_stages, chain, \
    flag_value, load_config, load_reports, load_stages, load_sweep, product, run_names, stage, \
    tier, values, zipped
from ponder_jax.sweep.runner import Result, Run, check, emit, execute, plan
from ponder_jax.sweep.summary import Report, aggregate, best_runs, format_table, summarize, \
    write_report, write_summary

__all__ = ["ARM", "Override", "Report", "Result", "Run", "Stage", "SweepError", "aggregate",
           "arms", "as_stages", "best_runs", "chain", "check", "emit", "execute", "flag_value",
           "format_table", "load_config", "load_reports", "load_stages", "load_sweep", "main",
           "plan", "product", "run_names", "stage", "summarize", "tier", "values", "write_report",
           "write_summary", "zipped"]
