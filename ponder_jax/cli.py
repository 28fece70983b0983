"""Console entry points. `ponder-train --config=configs/demo.py --workdir=DIR --config.a.b=v`.

Configs are ml-collections files (`get_config()`), locked so a typo'd override fails; the whole
config is validated once at start and a bad value exits with a message naming the key.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file with get_config(), e.g. configs/demo.py.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and plots go.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0 for multi-process runs (auto-detected on TPU pods and Slurm).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_INIT_TIMEOUT = flags.DEFINE_float(
    "init_timeout", 300.0, "Seconds to wait for every process of a multi-process job to arrive.")


def _train(argv) -> None:
  del argv
  from ponder_jax import distributed, xla_flags  # pylint: disable=import-outside-toplevel
  xla_flags.apply()  # before the backend initialises
  from ponder_jax.train.metrics import quiet_library_logs  # pylint: disable=import-outside-toplevel
  quiet_library_logs()
  try:
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                           timeout_s=_INIT_TIMEOUT.value)
  except distributed.DistributedInitError as e:
    print(f"ponder-train: {e}", file=sys.stderr)
    sys.exit(3)
  from ponder_jax.config import ConfigError  # pylint: disable=import-outside-toplevel
  from ponder_jax.train.trainer import build_trainer  # pylint: disable=import-outside-toplevel
  try:
    trainer = build_trainer(_CONFIG.value, _WORKDIR.value)
  except ConfigError as e:
    logging.error("Invalid config: %s", e)
    print(f"ponder-train: invalid config: {e}", file=sys.stderr)
    sys.exit(2)
  trainer.run()


def train_main() -> None:
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(_train)


if __name__ == "__main__":
  train_main()
