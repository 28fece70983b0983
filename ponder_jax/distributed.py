"""Multi-process start-up: every process of a job joins one JAX runtime before anything else.

Where the coordinator comes from:
  * explicit: `coordinator_address`, `num_processes`, `process_id` (GPU clusters, several local
    processes on one machine; `launch/local.py` passes them);
  * detected: on a Cloud TPU VM slice and under Slurm, JAX's own cluster detection fills them in
    (multi-slice TPU jobs too: queued resources set MEGASCALE_* on every worker).
A single process (no coordinator, no cluster) is a no-op.

Why a handshake before `jax.distributed.initialize`: when a worker never arrives, JAX's
coordination service aborts the whole process from C++ ("DEADLINE_EXCEEDED ... RegisterTask")
without raising a Python exception or saying who is missing. So the processes first meet on
the coordinator's own port in a small line-based TCP exchange: process 0 listens, the others
say who they are, and process 0 either answers "go" (then closes the socket, and JAX's service
takes the port) or, at the timeout, tells everyone which process ids did not arrive. Every
process then raises `DistributedInitError` with the coordinator address, its own id, the
expected count, how long it waited and the missing ids. The handshake adds no port: it uses
the coordinator's before JAX does.

Which process does what afterwards (see the trainer): metrics, plots and the summary table are
written by process 0 only; orbax checkpoints are written by all processes together (each saves
its shards, process 0 finalises the directory), so `Checkpointer.close()` runs everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time

from absl import logging

DEFAULT_TIMEOUT_S = 300
# How long a non-coordinator keeps listening past its own deadline, so that the coordinator's
# verdict (which ids are missing) reaches it instead of a bare timeout.
_REPLY_GRACE_S = 5.0


class DistributedInitError(RuntimeError):
  """The processes of a job did not all meet (or were started inconsistently)."""


@dataclasses.dataclass(frozen=True)
class JobSpec:
  """Where this process sits in the job, resolved from arguments or the cluster."""
  coordinator_address: str  # host:port of process 0
  num_processes: int
  process_id: int
  local_device_ids: tuple[int, ...] | None = None  # set by Slurm detection (one GPU per task)
  source: str = "explicit"  # explicit | cluster

  @property
  def host(self) -> str:
    return self.coordinator_address.rsplit(":", 1)[0].strip("[]")

  @property
  def port(self) -> int:
    return int(self.coordinator_address.rsplit(":", 1)[1])


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None) -> JobSpec | None:
  """The job this process belongs to, or None for a single-process run."""
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  local_device_ids, source = None, "explicit"
  if coordinator_address is None and _in_cluster():
    coordinator_address, num_processes, process_id, local_device_ids = _detect(
        num_processes, process_id)
    source = "cluster"
  if coordinator_address is None:
    if num_processes not in (None, 1):
      raise DistributedInitError(
          f"num_processes={num_processes} needs --coordinator_address=host:port (the address of "
          "process 0); it is detected automatically only on Cloud TPU VMs and under Slurm.")
    return None
  if num_processes is None or process_id is None:
    raise DistributedInitError(
        f"coordinator_address={coordinator_address!r} also needs --num_processes and "
        f"--process_id (got num_processes={num_processes}, process_id={process_id}).")
  if ":" not in coordinator_address or not coordinator_address.rsplit(":", 1)[1].isdigit():
    raise DistributedInitError(
        f"coordinator_address={coordinator_address!r} must be host:port, e.g. 10.0.0.2:1234.")
  if not (isinstance(num_processes, int) and num_processes >= 1):
    raise DistributedInitError(f"num_processes={num_processes!r} must be an integer >= 1.")
  if not (isinstance(process_id, int) and 0 <= process_id < num_processes):
    raise DistributedInitError(
        f"process_id={process_id!r} must lie in [0, num_processes={num_processes}).")
  if num_processes == 1:
    return None
  return JobSpec(coordinator_address, num_processes, process_id,
                 tuple(local_device_ids) if local_device_ids else None, source)


def _in_cluster() -> bool:
  """True on a Cloud TPU VM or inside a Slurm job step; JAX knows how to read either."""
  if "SLURM_JOB_ID" in os.environ and "SLURM_PROCID" in os.environ:
    return True
  try:
    from jax._src.cloud_tpu_init import running_in_cloud_tpu_vm  # pylint: disable=import-outside-toplevel
  except ImportError:
    return "TPU_WORKER_HOSTNAMES" in os.environ
  return bool(running_in_cloud_tpu_vm)


def _detect(num_processes, process_id):
  # JAX's cluster detection is private API; it is what jax.distributed.initialize() itself
  # calls, so the values are exactly the ones JAX would use.
  from jax._src import clusters  # pylint: disable=import-outside-toplevel
  return clusters.ClusterEnv.auto_detect_unset_distributed_params(
      None, num_processes, process_id, None, None, DEFAULT_TIMEOUT_S)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *,
               timeout_s: float = DEFAULT_TIMEOUT_S) -> JobSpec | None:
  """Joins the multi-process job if one is described; a no-op (returns None) for one process.

  Raises DistributedInitError when not every process arrives within `timeout_s`, naming the
  coordinator, this process, the expected count, the time waited and the missing ids.
  """
  spec = resolve(coordinator_address, num_processes, process_id)
  if spec is None:
    return None
  if timeout_s <= 0:
    raise DistributedInitError(f"timeout_s={timeout_s} must be positive.")
  start = time.monotonic()
  logging.info("Process %d of %d: meeting at coordinator %s (%s; timeout %.0f s)",
               spec.process_id, spec.num_processes, spec.coordinator_address, spec.source,
               timeout_s)
  rendezvous(spec, timeout_s)
  # Imported here so that a failed handshake reports in a fraction of a second, not after the
  # ~2 s it takes to import JAX.
  import jax  # pylint: disable=import-outside-toplevel
  # Only affects the CPU backend: lets CPU processes run cross-process collectives.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  remaining = max(timeout_s - (time.monotonic() - start), 10.0)
  jax.distributed.initialize(coordinator_address=spec.coordinator_address,
                             num_processes=spec.num_processes, process_id=spec.process_id,
                             local_device_ids=list(spec.local_device_ids)
                             if spec.local_device_ids else None,
                             initialization_timeout=int(remaining + 1))
  # One line for the person watching, whatever the log verbosity (the CLIs quiet library logs).
  print(f"Joined the job as process {jax.process_index()} of {jax.process_count()} "
        f"({jax.local_device_count()} local / {jax.device_count()} global devices) in "
        f"{time.monotonic() - start:.1f} s", file=sys.stderr)
  return spec


# The handshake -----------------------------------------------------------------------------
def rendezvous(spec: JobSpec, timeout_s: float) -> None:
  """Blocks until every process of `spec` has arrived, or raises DistributedInitError."""
  if spec.process_id == 0:
    _coordinate(spec, timeout_s)
  else:
    _join(spec, timeout_s)


def _describe(spec: JobSpec) -> str:
  return (f"process {spec.process_id} of {spec.num_processes} "
          f"(coordinator {spec.coordinator_address})")


def _missing_message(spec: JobSpec, waited: float, missing: list[int]) -> str:
  return (f"Multi-process start-up failed for {_describe(spec)}: after {waited:.1f} s, "
          f"process id(s) {missing} of 0..{spec.num_processes - 1} did not arrive. Start every "
          f"process with the same coordinator address and --num_processes={spec.num_processes}, "
          "check that the missing hosts can reach the coordinator, or raise the timeout.")


def _send(conn: socket.socket, message: dict) -> None:
  conn.sendall((json.dumps(message) + "\n").encode())


def _read_line(conn: socket.socket, deadline: float) -> dict | None:
  buffer = b""
  while b"\n" not in buffer:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
      return None
    conn.settimeout(remaining)
    try:
      chunk = conn.recv(4096)
    except (socket.timeout, OSError):
      return None
    if not chunk:
      return None
    buffer += chunk
  try:
    return json.loads(buffer.split(b"\n", 1)[0])
  except json.JSONDecodeError:
    return None


def _listen(port: int) -> socket.socket:
  family = socket.AF_INET6 if socket.has_dualstack_ipv6() else socket.AF_INET
  try:
    return socket.create_server(("", port), family=family, dualstack_ipv6=family ==
                                socket.AF_INET6, backlog=1024)
  except OSError as e:
    raise DistributedInitError(
        f"process 0 cannot listen on the coordinator port {port} ({e}); another job may be "
        "using it: pick another port in --coordinator_address.") from e


def _coordinate(spec: JobSpec, timeout_s: float) -> None:
  start = time.monotonic()
  deadline = start + timeout_s
  server = _listen(spec.port)
  conns: list[socket.socket] = []  # everyone who arrived gets the verdict
  arrived: dict[int, str] = {}  # process id -> host
  problem = None
  try:
    while len(arrived) < spec.num_processes - 1 and problem is None:
      remaining = deadline - time.monotonic()
      if remaining <= 0:
        break
      server.settimeout(remaining)
      try:
        conn, peer = server.accept()
      except socket.timeout:
        break
      hello = _read_line(conn, min(deadline, time.monotonic() + 10.0))
      if not isinstance(hello, dict) or "process_id" not in hello:
        conn.close()  # not one of ours (a port scanner, a stale client): ignore it
        continue
      pid, count, host = hello["process_id"], hello.get("num_processes"), hello.get("host")
      if count != spec.num_processes:
        problem = (f"process {pid} on {host} was started with --num_processes={count}, but the "
                   f"coordinator expects {spec.num_processes}")
      elif not (isinstance(pid, int) and 0 < pid < spec.num_processes):
        problem = f"a process on {host} reports the invalid process id {pid!r}"
      elif pid in arrived:
        problem = (f"process id {pid} arrived twice (from {arrived[pid]} and {host}); every "
                   "process needs its own --process_id")
      else:
        arrived[pid] = host or str(peer[0])
      conns.append(conn)
    waited = time.monotonic() - start
    missing = sorted(set(range(1, spec.num_processes)) - set(arrived))
    if problem is not None:
      message = f"Multi-process start-up failed for {_describe(spec)}: {problem}."
      verdict = {"status": "error", "message": message}
    elif missing:
      message = _missing_message(spec, waited, missing)
      verdict = {"status": "missing", "missing": missing, "waited_s": waited}
    else:
      message, verdict = None, {"status": "go"}
    for conn in conns:
      try:
        _send(conn, verdict)
      except OSError:
        pass
    # Let the clients close first, so that no server-side socket lingers in TIME_WAIT on the
    # port JAX's coordination service binds next.
    close_by = time.monotonic() + 5.0
    for conn in conns:
      _read_line(conn, close_by)
      conn.close()
  finally:
    server.close()
  if message is not None:
    raise DistributedInitError(message)
  logging.info("All %d processes arrived at %s after %.1f s", spec.num_processes,
               spec.coordinator_address, time.monotonic() - start)


def _join(spec: JobSpec, timeout_s: float) -> None:
  start = time.monotonic()
  deadline = start + timeout_s
  conn, last_error = None, None
  while conn is None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
      raise DistributedInitError(
          f"Multi-process start-up failed for {_describe(spec)}: process 0 did not answer at "
          f"{spec.coordinator_address} within {timeout_s:.1f} s (last error: {last_error}). Is "
          "process 0 running, is the address right, and can this host reach that port?")
    try:
      conn = socket.create_connection((spec.host, spec.port), timeout=min(remaining, 5.0))
    except OSError as e:
      last_error = e
      time.sleep(min(0.25, max(remaining, 0.0)))
  with conn:
    _send(conn, {"process_id": spec.process_id, "num_processes": spec.num_processes,
                 "host": socket.gethostname()})
    verdict = _read_line(conn, deadline + _REPLY_GRACE_S)
  waited = time.monotonic() - start
  if verdict is None:
    raise DistributedInitError(
        f"Multi-process start-up failed for {_describe(spec)}: reached process 0 but got no "
        f"answer within {waited:.1f} s; process 0 may have died or timed out earlier (see its "
        "log).")
  if verdict.get("status") == "missing":
    raise DistributedInitError(_missing_message(spec, verdict.get("waited_s", waited),
                                                verdict["missing"]))
  if verdict.get("status") != "go":
    raise DistributedInitError(verdict.get("message", f"unexpected answer {verdict!r}"))
