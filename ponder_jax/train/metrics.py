"""Training metrics: a JSONL log, TensorBoard event files, a progress bar, the loss plot and
the end-of-run results table. Everything here writes from process 0 only.

`<workdir>/metrics.jsonl` holds one JSON object per logged step (`{"step": ..., "loss": ...}`);
evaluation rows carry `eval/<source>/loss` keys. TensorBoard event files go to `<workdir>/tb`.
Paths go through etils.epath, so a pod's shared `gs://` workdir works like a local one.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import sys
from typing import Any, Mapping

import jax
from absl import logging
from etils import epath

from ponder_jax.validation import check, from_mapping


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
  """A validated `metrics` section: which of the run's outputs besides metrics.jsonl to write."""
  tensorboard: bool = True
  progress_bar: bool = True
  plot: bool = True  # runs/<name>/loss.png at the end

  @classmethod
  def from_config(cls, section: Mapping[str, Any]) -> "MetricsConfig":
    cfg = from_mapping(cls, section, "metrics")
    for field in dataclasses.fields(cfg):
      value = getattr(cfg, field.name)
      check(isinstance(value, bool), f"metrics.{field.name}", value, "must be true or false")
    return cfg


class MetricsWriter:
  """Fans scalars out to JSONL, TensorBoard and a tqdm progress bar on process 0."""

  def __init__(self, workdir: str, *, total_steps: int, start_step: int, tensorboard: bool,
               progress_bar: bool):
    self.enabled = jax.process_index() == 0
    self.path = epath.Path(workdir) / "metrics.jsonl"
    self._tb = self._bar = None
    if not self.enabled:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    previous = self.path.read_text() if self.path.exists() else ""
    self._file = self.path.open("a")
    if previous and not previous.endswith("\n"):
      self._file.write("\n")  # a killed run's partial last line stays on a line of its own
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb = SummaryWriter(str(epath.Path(workdir) / "tb"))
    if progress_bar:
      from tqdm import tqdm  # pylint: disable=import-outside-toplevel
      self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                       disable=not sys.stderr.isatty())

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    row.update({k: _to_python(v) for k, v in scalars.items()})
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()
    if self._tb is not None:
      for key, value in row.items():
        if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
          self._tb.add_scalar(key, value, step)

  def progress(self, step: int, loss: float, tokens_per_sec: float) -> None:
    if self._bar is not None:
      self._bar.n = step
      self._bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_sec:,.0f}", refresh=False)
      self._bar.refresh()

  def close(self) -> None:
    if not self.enabled:
      return
    self._file.close()
    if self._tb is not None:
      self._tb.close()
    if self._bar is not None:
      self._bar.close()


def _to_python(value: Any):
  if hasattr(value, "tolist"):
    value = value.tolist()
  return value


def read_metrics(workdir: str) -> list[dict]:
  path = epath.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  # A run killed mid-write can leave a partial last line: skip what does not parse.
  rows = []
  for line in path.read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return rows


def plot_losses(workdir: str, rows: list[dict] | None = None) -> str | None:
  """Writes <workdir>/loss.png: train loss per step, and eval loss per source."""
  rows = read_metrics(workdir) if rows is None else rows
  train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
  if not train:
    return None
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(7, 4))
  ax.plot(*zip(*train), label="train", linewidth=1)
  eval_keys = sorted({k for r in rows for k in r if k.startswith("eval/") and k.endswith("/loss")})
  for key in eval_keys:
    points = [(r["step"], r[key]) for r in rows if key in r]
    ax.plot(*zip(*points), marker="o", label=key[len("eval/"):-len("/loss")])
  ax.set_xlabel("step")
  ax.set_ylabel("loss (nats/token)")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  path = epath.Path(workdir) / "loss.png"
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=120)
  plt.close(fig)
  path.write_bytes(buffer.getvalue())
  return str(path)


def results_table(rows: list[dict]) -> str:
  """A plain-text summary: first/last train loss and the final eval per source."""
  train = [r for r in rows if "loss" in r]
  evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
  lines = [f"{'metric':<40} {'value':>12}", "-" * 53]
  if train:
    lines.append(f"{'train loss (first logged step %d)' % train[0]['step']:<40} "
                 f"{train[0]['loss']:>12.4f}")
    lines.append(f"{'train loss (last logged step %d)' % train[-1]['step']:<40} "
                 f"{train[-1]['loss']:>12.4f}")
    if "tokens_per_sec" in train[-1]:
      lines.append(f"{'tokens/s (last)':<40} {train[-1]['tokens_per_sec']:>12,.0f}")
    if "mfu" in train[-1]:
      lines.append(f"{'MFU (analytic, last)':<40} {train[-1]['mfu']:>12.1%}")
  if evals:
    last = evals[-1]
    for key in sorted(k for k in last if k.startswith("eval/")):
      lines.append(f"{key + ' @%d' % last['step']:<40} {last[key]:>12.4f}")
  return "\n".join(lines)


def quiet_library_logs() -> None:
  """Library INFO logs (orbax, grain, absl) off unless --verbosity was given on an absl command
  line: the terminal shows the progress bar, `announce` lines and the results."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not ("verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present):
    logging.set_verbosity(logging.WARNING)


def announce(message: str) -> None:
  """One line for the person watching (process 0, stderr): printed above the progress bar, and
  shown whatever the log verbosity (the CLIs keep library INFO logs off unless --verbosity)."""
  if jax.process_index() == 0:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    tqdm.write(message, file=sys.stderr)


def log_line(step: int, scalars: Mapping[str, Any]) -> None:
  shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in scalars.items() if not k.startswith("source/"))
  logging.info("step %d: %s", step, shown)
