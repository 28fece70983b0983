"""Multi-process start-up: `jax.distributed.initialize` with the coordinator and process ids
given explicitly (GPU clusters, local multi-process runs) or detected (TPU pods, Slurm).
On the CPU the collectives go through gloo, so several local processes form one job."""

from __future__ import annotations

import os

import jax
from absl import logging


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins the multi-process job if one is described; a no-op for a single process."""
  explicit = coordinator_address is not None and (num_processes or 1) > 1
  auto = "SLURM_JOB_ID" in os.environ or "TPU_WORKER_HOSTNAMES" in os.environ
  if not (explicit or auto):
    return
  # Only affects the CPU backend: lets CPU processes run cross-process collectives.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  logging.info("Joined the job as process %d of %d (%d local / %d global devices)",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
