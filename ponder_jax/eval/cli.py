"""`ponder-eval`: evaluation tasks (tasks.py) on a trained model, a Hugging Face model or every
run of a sweep.

  ponder-eval --workdir=RUN [--tasks=default] [--pauses=0,10] [--ponder-steps=S] [--items=N]
              [--batch-size=B] [--out=DIR] [--no-progress]
              [--choice-fields=question,options,label] [--choice-delimiter=' ']
  ponder-eval --hf=DIR ...        a Hugging Face model directory (or a converter checkpoint)
  ponder-eval --sweep=DIR ...     every run under a ponder-sweep directory, then one table

A workdir's results go to RUN/eval/ (a Hugging Face model's to ./eval/<dir name>/; --out
overrides), as report.py describes, and the table is printed. `--pauses=0,10` evaluates every
task (perplexity aside) without pauses and with 10 appended to every prompt. Exit status: 0,
1 if any task failed (the others' results are written all the same), 2 on bad arguments or a
model that cannot be loaded.
"""

from __future__ import annotations

import argparse
import logging as py_logging
import os
import sys
from typing import Sequence

from ponder_jax.config import ConfigError


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="ponder-eval", description=__doc__.split("\n\n")[0])
  model = parser.add_mutually_exclusive_group(required=True)
  model.add_argument("--workdir", help="a trainer workdir, its checkpoints/ or a step dir")
  model.add_argument("--hf", help="a Hugging Face model directory or a converter checkpoint")
  model.add_argument("--sweep", help="a ponder-sweep directory: every run in it")
  parser.add_argument("--tasks", default="default",
                      help="comma list of task names, each optionally NAME@M for M pauses "
                           "(default: the set that fits the model)")
  parser.add_argument("--pauses", default="",
                      help="comma list of M_inf: every task at each (0 = without pauses)")
  parser.add_argument("--choice-fields", "--choice_fields", dest="choice_fields", default="",
                      help="choice:<path> tasks: the context, choices and gold fields of each "
                           "record, comma-separated (default: query,choices,gold)")
  parser.add_argument("--choice-delimiter", "--choice_delimiter", dest="choice_delimiter",
                      default=None,
                      help="choice:<path> tasks: text between context and choice (default ' ')")
  parser.add_argument("--ponder-steps", "--ponder_steps", dest="ponder_steps", type=int,
                      default=None, help="s at inference (default: as the run's trainer "
                                         "evaluated)")
  parser.add_argument("--items", type=int, default=0,
                      help="items per task (per length for procedural tasks); 0: each task's own")
  parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=64,
                      help="rows per generate/score call")
  parser.add_argument("--out", default="", help="output directory (see above)")
  parser.add_argument("--no-progress", "--no_progress", dest="no_progress",
                      action="store_true", help="no progress bars")
  return parser


def with_pauses(names: Sequence[str], pauses: str) -> list[str]:
  """Every name (without its own @M, perplexity aside) at each M of the comma list `pauses`."""
  counts = [p.strip() for p in pauses.split(",") if p.strip()]
  for count in counts:
    if not count.isdigit():
      raise ConfigError("pauses", pauses, "must be a comma list of integers >= 0")
  if not counts:
    return list(names)
  out = []
  for name in names:
    if "@" in name or name.startswith("ppl"):
      out.append(name)
    else:
      out += [name if int(m) == 0 else f"{name}@{int(m)}" for m in counts]
  return out


def task_list(names: Sequence[str], args) -> list:
  """Names, with `choice:<path>` tasks as specs when --choice_fields / --choice_delimiter
  say how their records are laid out."""
  from ponder_jax.eval import tasks  # pylint: disable=import-outside-toplevel
  options = {}
  if args.choice_fields:
    fields = [f.strip() for f in args.choice_fields.split(",")]
    if len(fields) != 3 or not all(fields):
      raise ConfigError("choice_fields", args.choice_fields,
                        "must name three fields: context,choices,gold")
    options.update(zip(("context_field", "choices_field", "gold_field"), fields))
  if args.choice_delimiter is not None:
    options["target_delimiter"] = args.choice_delimiter
  if not options:
    return list(names)
  return [tasks.resolve(n).with_options(**options) if n.startswith("choice:") else n
          for n in names]


def _quiet_libraries() -> None:
  """The terminal shows results: library INFO logs (orbax, absl, jax) are silenced."""
  from absl import logging  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.WARNING)
  for name in ("jax", "orbax", "absl", "grain"):
    py_logging.getLogger(name).setLevel(py_logging.WARNING)


def _evaluate_one(path: str, out_dir: str, names: list, args) -> dict:
  """Loads, evaluates, writes and prints one model; returns its results.json data."""
  from ponder_jax.eval import report, runner  # pylint: disable=import-outside-toplevel
  model = runner.load_model(path, ponder_steps=args.ponder_steps)
  results = runner.evaluate(model, names, items=args.items, batch_size=args.batch_size,
                            progress=not args.no_progress and sys.stderr.isatty())
  paths = report.write(results, out_dir)
  print(report.markdown_table(results))
  print(f"\nresults: {paths['json']}, {paths['markdown']}"
        + "".join(f", {paths[k]}" for k in ("bars", "length") if k in paths))
  return results.to_json()


def _sweep_runs(sweep_dir: str) -> list[str]:
  from ponder_jax.train import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  runs = []
  for name in sorted(os.listdir(sweep_dir)):
    path = os.path.join(sweep_dir, name)
    try:
      if os.path.isdir(path):
        ckpt_lib.resolve_checkpoint_dir(path)
        runs.append(path)
    except FileNotFoundError:
      continue
  return runs


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  from ponder_jax import xla_flags  # pylint: disable=import-outside-toplevel
  xla_flags.apply()  # before the backend initialises
  _quiet_libraries()
  try:
    from ponder_jax.eval import tasks  # pylint: disable=import-outside-toplevel
    names = with_pauses(tasks.split_names(args.tasks), args.pauses)
    if not names:
      raise ConfigError("tasks", args.tasks, "names no task")
    names = task_list(names, args)
    if args.items < 0 or args.batch_size < 1:
      raise ConfigError("items" if args.items < 0 else "batch_size",
                        args.items if args.items < 0 else args.batch_size,
                        "must be >= 0 (items) / >= 1 (batch_size)")
    failed = False
    if args.sweep:
      from ponder_jax.eval import report  # pylint: disable=import-outside-toplevel
      runs = _sweep_runs(args.sweep)
      if not runs:
        raise FileNotFoundError(f"{args.sweep}: no run with a checkpoint in it")
      summaries = {}
      for run in runs:
        print(f"== {os.path.basename(run)}")
        summaries[os.path.basename(run)] = data = _evaluate_one(
            run, os.path.join(run, "eval"), names, args)
        failed |= bool(data["errors"])
        print()
      paths = report.write_sweep(args.sweep, summaries)
      print(report.sweep_table(report.sweep_rows(summaries)))
      print(f"\nsweep summary: {paths['markdown']}, {paths['json']}")
    else:
      path = args.workdir or args.hf
      out = args.out or (os.path.join(path, "eval") if args.workdir else
                         os.path.join("eval", os.path.basename(os.path.abspath(path))))
      failed = bool(_evaluate_one(path, out, names, args)["errors"])
  except (ConfigError, FileNotFoundError, ValueError) as e:
    print(f"ponder-eval: {e}", file=sys.stderr)
    return 2
  if failed:
    print("ponder-eval: some tasks failed (see the table); the others' results are written",
          file=sys.stderr)
  return 1 if failed else 0


def console_main() -> None:
  sys.exit(main())


if __name__ == "__main__":
  console_main()
