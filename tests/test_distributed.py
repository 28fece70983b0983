"""Tests for ponder_jax/distributed.py: resolving the job, the start-up handshake's errors when a
worker is missing or misconfigured, and a real two-process CPU job (gloo) that meets and runs a
cross-process collective. Multi-process cases run in subprocesses."""

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from ponder_jax import distributed

_SCRIPT = textwrap.dedent("""\
    import sys, time
    from ponder_jax import distributed
    address, count, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    timeout = float(sys.argv[4])
    start = time.monotonic()
    try:
      distributed.initialize(address, count, pid, timeout_s=timeout)
    except distributed.DistributedInitError as e:
      print(f"ERROR after {time.monotonic() - start:.1f}s: {e}", flush=True)
      sys.exit(3)
    import jax, jax.numpy as jnp
    from jax.experimental import multihost_utils
    ids = multihost_utils.process_allgather(jnp.array([jax.process_index()]))
    print("JOINED", jax.process_index(), jax.process_count(), ids.ravel().tolist(), flush=True)
    """)


def _port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(count: int, pids, timeout: float, counts=None):
  """Starts process ids `pids` of a `count`-process job; returns their (code, output)."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  address = f"127.0.0.1:{_port()}"
  procs = [subprocess.Popen([sys.executable, "-c", _SCRIPT, address,
                             str((counts or {}).get(pid, count)), str(pid), str(timeout)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
           for pid in pids]
  results = []
  for proc in procs:
    out, _ = proc.communicate(timeout=timeout + 60)
    results.append((proc.returncode, out))
  return address, results


def test_missing_worker_fails_within_timeout_naming_it():
  start = time.monotonic()
  address, [(code, out)] = _start(2, [0], timeout=3)
  elapsed = time.monotonic() - start
  assert code == 3, out
  assert f"process 0 of 2 (coordinator {address})" in out
  assert "process id(s) [1] of 0..1 did not arrive" in out
  assert "after 3.0 s" in out
  assert elapsed < 3 + 20  # interpreter start-up + the 3 s wait, not JAX's 300 s default


def test_present_workers_learn_who_is_missing():
  address, results = _start(3, [0, 1], timeout=4)
  for pid, (code, out) in zip([0, 1], results):
    assert code == 3, out
    assert f"process {pid} of 3 (coordinator {address})" in out
    assert "process id(s) [2] of 0..2 did not arrive" in out


def test_inconsistent_process_counts_are_reported():
  _, results = _start(2, [0, 1], timeout=10, counts={1: 3})
  for code, out in results:
    assert code == 3, out
    assert "was started with --num_processes=3, but the coordinator expects 2" in out


def test_coordinator_never_started():
  address, [(code, out)] = _start(2, [1], timeout=2)
  assert code == 3, out
  assert f"process 1 of 2 (coordinator {address}): process 0 did not answer" in out


def test_two_processes_join_and_run_a_collective():
  _, results = _start(2, [0, 1], timeout=60)
  for pid, (code, out) in zip([0, 1], results):
    assert code == 0, out
    assert f"JOINED {pid} 2 [0, 1]" in out


def test_resolve_explicit_and_single_process(monkeypatch):
  monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
  monkeypatch.delenv("SLURM_JOB_ID", raising=False)
  assert distributed.resolve() is None
  assert distributed.resolve("10.0.0.2:1234", 1, 0) is None
  spec = distributed.resolve("10.0.0.2:1234", 4, 3)
  assert (spec.host, spec.port, spec.num_processes, spec.process_id) == ("10.0.0.2", 1234, 4, 3)
  assert distributed.resolve("[::1]:99", 2, 0).host == "::1"


@pytest.mark.parametrize("args,message", [
    (("10.0.0.2:1234", None, 0), "also needs --num_processes and --process_id"),
    (("10.0.0.2:1234", 2, None), "also needs --num_processes and --process_id"),
    (("10.0.0.2:1234", 2, 2), "process_id=2 must lie in [0, num_processes=2)"),
    (("10.0.0.2", 2, 0), "must be host:port"),
    ((None, 4, 0), "num_processes=4 needs --coordinator_address"),
])
def test_resolve_errors_name_the_argument(args, message, monkeypatch):
  monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
  monkeypatch.delenv("SLURM_JOB_ID", raising=False)
  with pytest.raises(distributed.DistributedInitError) as e:
    distributed.resolve(*args)
  assert message in str(e.value)
