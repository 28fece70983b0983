"""What `ponder-eval` writes: results.json, a markdown table, plots, per-item samples, and one
table across the runs of a sweep directory.

  <out>/results.json       {"model", "ponder_steps", "tasks": {name: {kind, num_pauses, metrics,
                           breakdown_key, breakdown, seconds}}, "errors": {name: message}}
  <out>/results.md         one row per task and metric, then the errors
  <out>/tasks.png          per-task bars: accuracy-like metrics, and bits per byte
  <out>/length.png         exact match against length, one line per procedural task
  <out>/samples/<task>.jsonl  one record per item (prompt as fed, output, whether it was right)
  <sweep>/eval_summary.{md,json}  one row per run, one column per task metric
"""

from __future__ import annotations

import io
import json
import os
import re
from typing import Any, Mapping, Sequence

from ponder_jax.eval.runner import Results

# The metrics a kind is reported by, in table order.
REPORTED = {"perplexity": ("perplexity", "bits_per_byte"), "procedural": ("exact_match",),
            "math": ("accuracy", "thought_verified"), "choice": ("acc", "acc_norm")}
_UNIT_INTERVAL = ("exact_match", "accuracy", "thought_verified", "acc", "acc_norm")


def _reported(task: Mapping[str, Any]) -> list[tuple[str, Any]]:
  metrics = task["metrics"]
  return [(m, metrics[m]) for m in REPORTED[task["kind"]] if m in metrics]


def _cell(value: Any) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:.4g}" if abs(value) >= 10 else f"{value:.4f}"
  return str(value)


def markdown_table(results: Results | Mapping[str, Any]) -> str:
  """| task | metric | value | items (tokens for perplexity) | seconds |, then the tasks that
  failed and why."""
  data = results.to_json() if isinstance(results, Results) else results
  lines = [f"Model: {data['model']} (ponder steps: {_cell(data['ponder_steps'])})", "",
           "| task | metric | value | items (tokens) | seconds |", "|---|---|---|---|---|"]
  for name, task in data["tasks"].items():
    items = task["metrics"].get("items", task["metrics"].get("tokens"))
    for metric, value in _reported(task):
      lines.append(f"| {name} | {metric} | {_cell(value)} | {_cell(items)} | "
                   f"{task['seconds']:.1f} |")
  if data["errors"]:
    lines += ["", "| failed task | error |", "|---|---|"]
    lines += [f"| {name} | {message.replace('|', '/')} |"
              for name, message in data["errors"].items()]
  return "\n".join(lines)


def _file_name(task: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.@-]+", "_", task).strip("_") or "task"


def write(results: Results, out_dir: str) -> dict[str, str]:
  """Writes every output of the module docstring under `out_dir`; returns {what: path}."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {"json": os.path.join(out_dir, "results.json"),
           "markdown": os.path.join(out_dir, "results.md")}
  data = results.to_json()
  with open(paths["json"], "w", encoding="utf-8") as f:
    json.dump(data, f, indent=2)
  with open(paths["markdown"], "w", encoding="utf-8") as f:
    f.write(markdown_table(data) + "\n")
  sample_dir = os.path.join(out_dir, "samples")
  for name, result in results.tasks.items():
    if result.samples:
      os.makedirs(sample_dir, exist_ok=True)
      with open(os.path.join(sample_dir, f"{_file_name(name)}.jsonl"), "w",
                encoding="utf-8") as f:
        for sample in result.samples:
          f.write(json.dumps(sample) + "\n")
  if data["tasks"]:
    paths["bars"] = _plot_bars(data, os.path.join(out_dir, "tasks.png"))
    lengths = _plot_lengths(data, os.path.join(out_dir, "length.png"))
    if lengths:
      paths["length"] = lengths
  return paths


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _save(fig, path: str) -> str:
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=110)
  with open(path, "wb") as f:
    f.write(buffer.getvalue())
  return path


def _plot_bars(data: Mapping[str, Any], path: str) -> str:
  plt = _pyplot()
  scores = [(f"{name}\n{metric}", value) for name, task in data["tasks"].items()
            for metric, value in _reported(task)
            if metric in _UNIT_INTERVAL and value is not None]
  bpb = [(name, task["metrics"]["bits_per_byte"]) for name, task in data["tasks"].items()
         if task["kind"] == "perplexity" and task["metrics"].get("bits_per_byte") is not None]
  ppl = [(name, task["metrics"]["perplexity"]) for name, task in data["tasks"].items()
         if task["kind"] == "perplexity" and task["metrics"].get("bits_per_byte") is None]
  panels = [(scores, "score", (0, 1)), (bpb, "bits per byte", None),
            (ppl, "perplexity (no text bytes)", None)]
  panels = [p for p in panels if p[0]]
  widths = [max(len(p[0]), 2) for p in panels]
  fig, axes = plt.subplots(1, len(panels), figsize=(1.0 + 0.7 * sum(widths), 4.2),
                           gridspec_kw={"width_ratios": widths}, squeeze=False)
  for ax, (bars, label, limits) in zip(axes[0], panels):
    ax.bar(range(len(bars)), [v for _, v in bars], color="tab:blue")
    ax.set_xticks(range(len(bars)), [n for n, _ in bars], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(label)
    if limits:
      ax.set_ylim(*limits)
    ax.grid(axis="y", alpha=0.3)
  fig.suptitle(os.path.basename(str(data["model"]).rstrip("/")) or "model", fontsize=9)
  fig.tight_layout()
  _save(fig, path)
  plt.close(fig)
  return path


def _plot_lengths(data: Mapping[str, Any], path: str) -> str | None:
  curves = {name: task for name, task in data["tasks"].items()
            if task["kind"] == "procedural" and len(task.get("breakdown", {})) > 1}
  if not curves:
    return None
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7, 4))
  for name, task in curves.items():
    points = sorted((int(length), row["exact_match"]) for length, row
                    in task["breakdown"].items() if row["exact_match"] is not None)
    if points:
      ax.plot(*zip(*points), marker="o", label=f"{name} ({task['breakdown_key']})")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("length")
  ax.set_ylabel("exact match")
  ax.set_ylim(-0.02, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  _save(fig, path)
  plt.close(fig)
  return path


# Sweeps ----------------------------------------------------------------------------------------


def sweep_rows(runs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
  """One row per run (its results.json data): `<task>/<metric>` columns, failed tasks '-'."""
  rows = []
  for run, data in runs.items():
    row: dict[str, Any] = {"run": run}
    for name, task in data["tasks"].items():
      for metric, value in _reported(task):
        row[f"{name}/{metric}"] = value
    row["failed"] = ", ".join(data["errors"]) or None
    rows.append(row)
  return rows


def sweep_table(rows: Sequence[Mapping[str, Any]]) -> str:
  columns = ["run"] + sorted({c for row in rows for c in row} - {"run", "failed"}) + ["failed"]
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
  return "\n".join(lines)


def write_sweep(sweep_dir: str, runs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
  rows = sweep_rows(runs)
  paths = {"json": os.path.join(sweep_dir, "eval_summary.json"),
           "markdown": os.path.join(sweep_dir, "eval_summary.md")}
  with open(paths["json"], "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=2)
  with open(paths["markdown"], "w", encoding="utf-8") as f:
    f.write(sweep_table(rows) + "\n")
  return paths
