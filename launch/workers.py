"""Run one command per worker in parallel, each with its own log file, and fail fast.

Used by tpu.py (one `gcloud ... ssh --worker=i` per TPU host) and local.py (one process per
GPU or CPU process). Commands are argument lists, never shell strings, so no value is
re-interpreted by a local shell. One worker's output (process 0's by default) is also echoed to
the terminal; if any worker exits non-zero, the others are sent SIGTERM (the trainer saves a
checkpoint and exits on SIGTERM) and, after a grace period, SIGKILL.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Mapping, Sequence

GRACE_S = 30.0


@dataclasses.dataclass(frozen=True)
class Worker:
  label: str  # e.g. "process 1" or "slice 0 worker 3"
  argv: tuple[str, ...]
  log: str  # path of this worker's log file
  env: Mapping[str, str] = dataclasses.field(default_factory=dict)  # added to os.environ

  def shell_line(self) -> str:
    """The command as one copy-pasteable shell line (values quoted)."""
    assignments = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
    return " ".join(assignments + [shlex.join(self.argv)])


def _pump(proc: subprocess.Popen, log_path: str, echo: bool) -> None:
  with open(log_path, "ab") as log:
    for line in iter(proc.stdout.readline, b""):
      log.write(line)
      log.flush()
      if echo:
        sys.stdout.buffer.write(line)
        sys.stdout.flush()


def tail(path: str, lines: int = 20) -> str:
  try:
    with open(path, "rb") as f:
      return b"".join(f.readlines()[-lines:]).decode(errors="replace")
  except OSError:
    return ""


def run_all(workers: Sequence[Worker], *, echo: int | None = 0, cwd: str | None = None,
            grace_s: float = GRACE_S) -> dict[str, int]:
  """Starts every worker, waits for all; returns label -> exit code (fail fast on the first
  non-zero exit). Log files are appended to, so a relaunch keeps the earlier attempt's lines."""
  procs: list[subprocess.Popen] = []
  pumps = []
  for i, worker in enumerate(workers):
    os.makedirs(os.path.dirname(os.path.abspath(worker.log)), exist_ok=True)
    env = {**os.environ, **worker.env}
    proc = subprocess.Popen(list(worker.argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, cwd=cwd, start_new_session=True)
    procs.append(proc)
    pump = threading.Thread(target=_pump, args=(proc, worker.log, echo == i), daemon=True)
    pump.start()
    pumps.append(pump)
  codes: dict[str, int] = {}
  failed = None
  try:
    while len(codes) < len(workers):
      for worker, proc in zip(workers, procs):
        if worker.label not in codes and proc.poll() is not None:
          codes[worker.label] = proc.returncode
          if proc.returncode != 0 and failed is None:
            failed = worker
            print(f"\n{worker.label} exited with code {proc.returncode}; stopping the others. "
                  f"Its log ({worker.log}) ends with:\n{tail(worker.log)}", file=sys.stderr)
            _stop([p for p in procs if p.poll() is None], grace_s)
      time.sleep(0.1)
  except KeyboardInterrupt:
    print("Interrupted: sending SIGTERM to every worker.", file=sys.stderr)
    _stop([p for p in procs if p.poll() is None], grace_s)
    raise
  finally:
    for pump in pumps:
      pump.join(timeout=5)
  return codes


def _stop(procs: Sequence[subprocess.Popen], grace_s: float) -> None:
  for proc in procs:
    _signal(proc, signal.SIGTERM)
  deadline = time.monotonic() + grace_s
  for proc in procs:
    try:
      proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
      _signal(proc, signal.SIGKILL)
      proc.wait()


def _signal(proc: subprocess.Popen, sig: int) -> None:
  # Each worker runs in its own session: signal its process group (the process it started too).
  try:
    os.killpg(proc.pid, sig)
  except ProcessLookupError:
    pass
