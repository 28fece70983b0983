"""What a sweep's runs measured: one row per run, and a report per arm.

`summarize` reads each run's final numbers: for ponder-train runs the last train loss and the
last eval's `eval/...` and `eval_tasks/...` scalars from metrics.jsonl; for ponder-bolt runs
every stage of its summary.json as `bolt/<stage>/<metric>` (and the last EM iteration again as
`bolt/final/<metric>`); for both the model's parameters, its training FLOPs per token
(accounting.py) and the training FLOPs of the whole run. `write_summary` writes them as
summary.{csv,json,png}.

A sweep file's `get_report()` returns a `Report`: which stage and metrics to report, the metric
that picks each arm's learning rate, and what a seed and an LR are. `aggregate` groups the rows
by arm, keeps each arm's best LR (by the mean over seeds of the selection metric) and gives
mean, standard deviation and count over seeds; `write_report` writes report.{md,json,png}.

Not here: the sweep language (dsl.py), running the runs (runner.py).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import statistics
from typing import Any, Callable, Mapping, Sequence

from ponder_jax.sweep.dsl import ARM
from ponder_jax.sweep.runner import NOT_CHOSEN, Result, parse

STANDARD = ("run", "stage", "status", "seconds")
COST = ("params", "non_embedding_params", "flops_per_token", "train_flops")


def _bolt_rows(workdir: str) -> dict[str, Any]:
  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    stages = json.load(f)
  out: dict[str, Any] = {}
  for row in stages:
    name = re.sub(r"^em_iteration_", "em_", re.sub(r"\W+", "_", row["stage"].lower()))
    metrics = {k: v for k, v in row.items() if k != "stage" and isinstance(v, (int, float))}
    out.update({f"bolt/{name}/{k}": v for k, v in metrics.items()})
    if name.startswith("em_"):
      out.update({f"bolt/final/{k}": v for k, v in metrics.items()})
  return out


def _cost(result: Result, step: int | None) -> dict[str, Any]:
  """Parameters and training FLOPs per token of the run's model (accounting.py)."""
  from ponder_jax import accounting  # pylint: disable=import-outside-toplevel
  from ponder_jax.experiment import Experiment  # pylint: disable=import-outside-toplevel
  try:
    exp = Experiment.from_config(parse(result.run.args))
  except Exception:  # pylint: disable=broad-except
    return {}  # a run whose config no longer builds (tests' fake programs): no cost columns
  c = exp.config
  per_token = accounting.training_flops_per_token(exp.model, c.data.seq_len,
                                                  exp.ponder.steps)
  no_tables = dataclasses.replace(exp.model, vocab_size=0, max_len=0)  # no token/position tables
  row = {"params": accounting.analytic_param_count(exp.model),
         "non_embedding_params": accounting.analytic_param_count(no_tables),
         "flops_per_token": per_token}
  if step is not None:
    row["train_flops"] = per_token * step * c.train.global_batch_size * c.data.seq_len
  return row


def summarize(results: Sequence[Result]) -> list[dict[str, Any]]:
  """One row per run: status, overrides, last step, final losses and metrics, cost."""
  from ponder_jax.train.metrics import read_metrics  # pylint: disable=import-outside-toplevel
  rows = []
  for result in results:
    run = result.run
    metrics = read_metrics(run.workdir) if os.path.isdir(run.workdir) else []
    train = [r for r in metrics if "loss" in r]
    evals = [r for r in metrics if any(k.startswith(("eval/", "eval_tasks/")) for k in r)]
    row: dict[str, Any] = {"run": run.name, **({"stage": run.stage} if run.stage else {}),
                           "status": result.status, "seconds": round(result.seconds, 1)}
    row.update(run.overrides)
    row["step"] = max((r["step"] for r in metrics), default=None)
    row["train_loss"] = train[-1]["loss"] if train else None
    if evals:
      row.update({k: v for k, v in evals[-1].items() if k.startswith(("eval/", "eval_tasks/"))
                  and not k.endswith("/items")})
    if run.program == "bolt":
      row.update(_bolt_rows(run.workdir))
    if result.status == "ok":
      row.update(_cost(result, row["step"]))
    rows.append(row)
  return rows


def _is_metric(column: str) -> bool:
  return column.startswith(("eval/", "eval_tasks/", "bolt/"))


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
  columns: list[str] = []
  for row in rows:
    columns += [k for k in row if k not in columns]
  metric = sorted(c for c in columns if _is_metric(c))
  cost = [c for c in COST if c in columns]
  return [c for c in columns if c not in metric and c not in cost] + metric + cost


def _cell(v: Any) -> str:
  if isinstance(v, float):
    return f"{v:.5g}"
  return "-" if v is None else str(v)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
  columns = list(columns or _columns(rows))
  table = [columns] + [[_cell(row.get(c)) for c in columns] for row in rows]
  widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
  lines = ["  ".join(text.ljust(w) for text, w in zip(line, widths)).rstrip()
           for line in table]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def _markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def write_summary(workdir: str, rows: Sequence[Mapping[str, Any]],
                  results: Sequence[Result]) -> dict[str, str]:
  """summary.csv, summary.json and summary.png (train loss curves, final eval losses)."""
  os.makedirs(workdir, exist_ok=True)
  paths = {ext: os.path.join(workdir, f"summary.{ext}") for ext in ("csv", "json", "png")}
  columns = _columns(rows)
  with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)
  with open(paths["json"], "w", encoding="utf-8") as f:
    json.dump(list(rows), f, indent=2, default=repr)
  _plot(paths["png"], rows, results)
  return paths


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _plot(path: str, rows: Sequence[Mapping[str, Any]], results: Sequence[Result]) -> None:
  from ponder_jax.train.metrics import read_metrics  # pylint: disable=import-outside-toplevel
  plt = _pyplot()
  fig, (curves, bars) = plt.subplots(1, 2, figsize=(12, 4.5))
  for result in results:
    points = [(r["step"], r["loss"]) for r in read_metrics(result.run.workdir) if "loss" in r]
    if points:
      curves.plot(*zip(*points), label=result.run.name, linewidth=1)
  curves.set_xlabel("step")
  curves.set_ylabel("train loss (nats/token)")
  curves.grid(alpha=0.3)
  if curves.lines and len(curves.lines) <= 24:
    curves.legend(fontsize=6)
  metrics = [c for c in _columns(rows) if c.startswith("eval/") and c.endswith("/loss")]
  metrics = metrics or ["train_loss"]
  width = 0.8 / len(metrics)
  for j, metric in enumerate(metrics):
    heights = [row.get(metric) if row.get(metric) is not None else 0.0 for row in rows]
    bars.bar([i + j * width for i in range(len(rows))], heights, width,
             label=metric.removeprefix("eval/").removesuffix("/loss"))
  bars.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))])
  bars.set_xticklabels([row["run"] for row in rows], rotation=30, ha="right", fontsize=6)
  bars.set_ylabel("final eval loss" if metrics != ["train_loss"] else "final train loss")
  bars.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# Reports ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Report:
  """How a study's rows become its table: per arm, the best LR's mean over seeds."""
  metrics: tuple[str, ...]  # the columns, e.g. ("eval/shakespeare/loss", "flops_per_token")
  select: str  # the metric that picks each arm's LR (mean over seeds)
  higher_is_better: bool = False
  stage: str | tuple[str, ...] | None = None  # the stage(s) reported (None: the last)
  arm_key: str = ARM  # what names an arm (runs without it are grouped by their overrides)
  seed_key: str = "train.seed"
  lr_key: str = "optim.lr"
  title: str = ""
  name: str = "report"  # its files: <name>.md, <name>.json, <name>.png
  derive: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None  # extra columns per row

  def __post_init__(self):
    if self.select not in self.metrics:
      raise ValueError(f"Report.select={self.select!r} must be one of metrics={self.metrics}")


def _arm(row: Mapping[str, Any], report: Report) -> str:
  if report.arm_key in row:
    return str(row[report.arm_key])
  ignore = {report.seed_key, report.lr_key, *STANDARD}
  return ",".join(f"{k}={row[k]}" for k in sorted(row) if "." in k and k not in ignore) \
      or "base"


def _stats(values: Sequence[float]) -> tuple[float | None, float | None]:
  values = [v for v in values if v is not None and not math.isnan(v)]
  if not values:
    return None, None
  return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(rows: Sequence[Mapping[str, Any]], report: Report) -> list[dict[str, Any]]:
  """One row per arm (in first-seen order): its best LR, seeds, and each metric's mean/std."""
  stages = [row.get("stage", "") for row in rows]
  chosen_stages = report.stage if report.stage is not None else (stages[-1:] or [""])
  chosen_stages = {chosen_stages} if isinstance(chosen_stages, str) else set(chosen_stages)
  arms: dict[str, list[Mapping[str, Any]]] = {}
  rows = [row for row in rows if row["status"] != NOT_CHOSEN]  # never meant to run
  if report.derive is not None:
    rows = [{**row, **report.derive(row)} for row in rows]
  for row in rows:
    if row.get("stage", "") in chosen_stages:
      arms.setdefault(_arm(row, report), []).append(row)
  out = []
  for arm, arm_rows in arms.items():
    by_lr: dict[Any, list[Mapping[str, Any]]] = {}
    for row in arm_rows:
      by_lr.setdefault(row.get(report.lr_key), []).append(row)
    def score(lr):
      mean, _ = _stats([r.get(report.select) for r in by_lr[lr] if r["status"] == "ok"])
      if mean is None:
        return math.inf
      return -mean if report.higher_is_better else mean
    best = min(by_lr, key=score)
    chosen = [r for r in by_lr[best] if r["status"] == "ok"]
    agg: dict[str, Any] = {"arm": arm, "lr": best, "seeds": len(chosen),
                           "failed": sum(r["status"] != "ok" for r in arm_rows)}
    for metric in report.metrics:
      agg[metric], agg[f"{metric} std"] = _stats([r.get(metric) for r in chosen])
    agg["lrs"] = {lr: _stats([r.get(report.select) for r in lr_rows
                              if r["status"] == "ok"])[0] for lr, lr_rows in by_lr.items()}
    out.append(agg)
  return out


def best_runs(results: Sequence[Result], metric: str, higher_is_better: bool) -> set[str]:
  """The names of the runs at their arm's best learning rate by `metric` (mean over seeds)."""
  rows = summarize(results)
  report = Report(metrics=(metric,), select=metric, higher_is_better=higher_is_better,
                  stage=tuple({row.get("stage", "") for row in rows}))
  best_lr = {arm["arm"]: arm["lr"] for arm in aggregate(rows, report) if arm["seeds"]}
  return {row["run"] for row in rows if row["status"] == "ok"
          and best_lr.get(_arm(row, report), object()) == row.get(report.lr_key)}


def report_table(arms: Sequence[Mapping[str, Any]], report: Report) -> list[dict[str, Any]]:
  """The printed form: 'mean ± std' per metric (std over seeds at the chosen LR)."""
  table = []
  for arm in arms:
    row = {"arm": arm["arm"], "lr": arm["lr"], "seeds": arm["seeds"]}
    for metric in report.metrics:
      mean, std = arm[metric], arm[f"{metric} std"]
      if mean is None:
        row[metric] = None
      elif metric in COST:
        row[metric] = f"{mean:.3g}"
      else:
        row[metric] = f"{mean:.4g} ± {std:.2g}" if arm["seeds"] > 1 else f"{mean:.4g}"
    if arm["failed"]:
      row["failed"] = arm["failed"]
    table.append(row)
  return table


def write_report(workdir: str, rows: Sequence[Mapping[str, Any]], report: Report) -> str:
  """<name>.json, <name>.md (the table) and <name>.png (the selection metric per arm, and
  against the LR); returns the markdown."""
  arms = aggregate(rows, report)
  table = report_table(arms, report)
  columns = ["arm", "lr", "seeds", *report.metrics] + (["failed"] if any(
      "failed" in r for r in table) else [])
  markdown = (f"{report.title}\n\n" if report.title else "") + _markdown(table, columns)
  path = os.path.join(workdir, report.name)
  with open(f"{path}.md", "w", encoding="utf-8") as f:
    f.write(markdown)
  with open(f"{path}.json", "w", encoding="utf-8") as f:
    json.dump(arms, f, indent=2, default=repr)
  _plot_report(f"{path}.png", arms, report)
  return markdown


def _plot_report(path: str, arms: Sequence[Mapping[str, Any]], report: Report) -> None:
  plt = _pyplot()
  fig, (bars, lrs) = plt.subplots(1, 2, figsize=(12, 4.5))
  names = [a["arm"] for a in arms]
  means = [a[report.select] if a[report.select] is not None else math.nan for a in arms]
  stds = [a[f"{report.select} std"] or 0.0 for a in arms]
  bars.bar(range(len(arms)), means, yerr=stds, capsize=4, color="tab:blue")
  bars.set_xticks(range(len(arms)))
  bars.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
  bars.set_ylabel(f"{report.select} (mean over seeds, best LR)")
  finite = [m for m in means if not math.isnan(m)]
  if finite and not report.higher_is_better:  # losses: zoom in on the differences
    spread = max(finite) - min(finite) + max(stds + [0.0])
    bars.set_ylim(max(0.0, min(finite) - 2 * spread - 1e-3), max(finite) + 2 * spread + 1e-3)
  bars.grid(axis="y", alpha=0.3)
  for arm in arms:
    points = sorted((lr, v) for lr, v in arm["lrs"].items()
                    if isinstance(lr, (int, float)) and v is not None)
    if points:
      lrs.plot(*zip(*points), marker="o", label=arm["arm"])
  if lrs.lines:
    lrs.set_xscale("log")
    lrs.legend(fontsize=7)
  lrs.set_xlabel(report.lr_key)
  lrs.set_ylabel(f"{report.select} (mean over seeds)")
  lrs.grid(alpha=0.3)
  fig.suptitle(report.title or report.select, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
