"""`ponder-sweep`: check every run of a sweep file, run them (or print their commands), then
write the summary and, when the file defines get_report(), the report.

  ponder-sweep --config=configs/sweeps/X.py --workdir=DIR [--parallel=N] [--emit=tpu|local]
               [--dry-run] [--report-only] [--config.a.b=v ...]

Every run's overrides are checked against the config before any run starts (an unknown key fails
with its name and close matches; each value is assigned to the config the way ml-collections
assigns it, then parsed from the exact command line the run gets, then the whole config is
validated). Runs go to `DIR/<run name>` (a study: `DIR/<stage>/<run name>`), sequentially or N
at a time, each writing `train.log` there. Run names come from the overrides alone
(`steps=3_ratio=0.1`), so re-running a sweep resumes every run from its checkpoints, and skips
runs that finished with the same command line. At the end `DIR/summary.{csv,json,png}` and a
table on stdout collect each run's final numbers, and `DIR/report.{md,json,png}` the report.
The runs share a JAX compilation cache (`DIR/jax_cache`), so runs that differ only in values
the program does not bake in (seeds, data) compile once.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
from typing import Sequence

from absl import app, flags
from ml_collections import config_flags

from ponder_jax.sweep import dsl, runner, summary


def _main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS
  config = config_flags.get_config_filename(f["config"])
  base = config_flags.get_override_values(f["config"])
  try:
    run_plan = runner.plan(config, f.workdir, dsl.load_stages(config), base)
    runner.check(run_plan)
    reports = dsl.load_reports(config)
  except dsl.SweepError as e:
    print(f"ponder-sweep: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"{len(run_plan)} runs of {config} checked.")
  if f.emit:
    print("\n".join(runner.emit(run_plan, f.emit, f.launcher_flags)))
    return
  if f["dry-run"].value:
    for run in run_plan:
      print(shlex.join(run.command()))
    return
  os.makedirs(f.workdir, exist_ok=True)
  if f["report-only"].value:
    records = [runner.done(run, same_config=False) for run in run_plan]
    results = [runner.Result(run, 0, record["seconds"]) if record else runner.Result(run)
               for run, record in zip(run_plan, records)]
    for stage in dict.fromkeys(run.stage for run in run_plan):  # from_best: what never ran
      runner.mark_not_chosen(results, stage, summary.best_runs)
  else:
    if f.compilation_cache is None:
      f.compilation_cache = os.path.join(f.workdir, "jax_cache")
    with open(os.path.join(f.workdir, "sweep.json"), "w", encoding="utf-8") as out:
      json.dump([{"name": r.name, "stage": r.stage, "overrides": r.overrides,
                  "command": r.command()} for r in run_plan], out, indent=2, default=repr)
    env = dict(os.environ)
    if f.compilation_cache:
      # Runs whose programs match (e.g. seeds, data settings) compile once for the whole sweep.
      env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.abspath(f.compilation_cache))
    # A terminated sweep stops its runs the way an interrupted one does: each checkpoints first.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    results = runner.execute(run_plan, f.parallel, env=env, best=summary.best_runs)
  rows = summary.summarize(results)
  paths = summary.write_summary(f.workdir, rows, results)
  print(summary.format_table(rows))
  print(f"summary: {paths['csv']}, {paths['json']}, {paths['png']}")
  for report in reports:
    print(summary.write_report(f.workdir, rows, report))
    print(f"report: {os.path.join(f.workdir, report.name)}.{{md,json,png}}")
  failed = [r.run.name for r in results if r.failed or r.status == "not run"]
  if failed:
    print(f"ponder-sweep: {len(failed)} run(s) failed or did not run: {', '.join(failed)} (see "
          "their train.log)", file=sys.stderr)
    sys.exit(1)


def main() -> None:
  config_flags.DEFINE_config_file(
      "config", None, "A config file with get_config() and get_sweep().", lock_config=True)
  flags.DEFINE_string("workdir", None, "Sweep directory; each run goes to <workdir>/<run name>.")
  flags.DEFINE_integer("parallel", 1, "Runs at a time (local execution).")
  flags.DEFINE_enum("emit", "", ["", "tpu", "local"],
                    "Print launch/<emit>.py commands for every run instead of running them.")
  flags.DEFINE_string("launcher_flags", "",
                      "Flags for the emitted launcher, e.g. '--name=pod --zone=us-central2-b "
                      "--accelerator=v4-32'.")
  flags.DEFINE_bool("dry-run", False, "Check every run and print the commands; run nothing.")
  flags.DEFINE_bool("report-only", False, "Run nothing: write the summary and report of the "
                    "runs that finished.")
  flags.DEFINE_string("compilation_cache", None, "JAX persistent compilation cache shared by "
                      "the runs (default <workdir>/jax_cache; '' for none; an exported "
                      "JAX_COMPILATION_CACHE_DIR wins).")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(_main)
