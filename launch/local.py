"""Local launches: one process per GPU host (all local GPUs in one process), one process per GPU,
or N CPU processes that talk over gloo (the multi-host code path, tested without a pod).

    python launch/local.py -- ponder-train --config=configs/demo.py --workdir=runs/demo
    python launch/local.py --num-processes=2 -- ponder-train --config=configs/demo.py \
        --workdir=runs/demo-2proc              # 2 processes: 1 GPU each, or 2 CPU processes
    python launch/local.py --num-processes=2 --cpu-devices=4 --dry-run -- ponder-train ...

Each process gets the command after `--` plus `--coordinator_address=127.0.0.1:<port>
--num_processes=N --process_id=i` (when N > 1), and its own log `<log-dir>/process-<i>.log`
(default log dir: `<workdir>/logs` from the command's --workdir); process 0's output is also
shown here. If one process fails, the others get SIGTERM (they checkpoint and exit).

Without a GPU (no `nvidia-smi -L` devices) the processes run on the CPU, with a warning, and
JAX_PLATFORMS=cpu. With GPUs, N processes split them evenly through CUDA_VISIBLE_DEVICES
(`--gpus-per-process` to choose).

Environment knobs (pass with --env KEY=VALUE, or export them):
  XLA_FLAGS                         extra XLA flags; ponder-train adds the recommended per-platform
                                    flags itself (ponder_jax/xla_flags.py), e.g. on GPU
                                    --xla_gpu_enable_latency_hiding_scheduler=true
  XLA_PYTHON_CLIENT_MEM_FRACTION    share of GPU memory JAX preallocates (default 0.75)
  XLA_PYTHON_CLIENT_PREALLOCATE     false: allocate on demand (slower, shares the GPU)
  NCCL_DEBUG=INFO                   NCCL set-up and collective logs (multi-GPU hangs)
  --cpu-devices=K                   K simulated devices per CPU process
                                    (--xla_force_host_platform_device_count=K)
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
from typing import Sequence

if __package__ in (None, ""):  # run as `python launch/local.py`: make `launch` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launch import workers  # pylint: disable=wrong-import-position


def count_gpus() -> int:
  """NVIDIA GPUs on this machine (without importing JAX, which would claim their memory)."""
  if shutil.which("nvidia-smi") is None:
    return 0
  try:
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30,
                         check=False)
  except (OSError, subprocess.TimeoutExpired):
    return 0
  return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _workdir(command: Sequence[str]) -> str | None:
  for i, arg in enumerate(command):
    if arg.startswith("--workdir="):
      return arg.split("=", 1)[1]
    if arg == "--workdir" and i + 1 < len(command):
      return command[i + 1]
  return None


def plan(command: Sequence[str], *, num_processes: int = 1, gpus: int = 0,
         gpus_per_process: int = 0, cpu_devices: int = 0, port: int = 0,
         log_dir: str = "", env: Sequence[tuple[str, str]] = ()) -> list[workers.Worker]:
  """The processes to start; raises ValueError naming the bad option."""
  if not command:
    raise ValueError("give the command after '--', e.g. -- ponder-train "
                     "--config=configs/demo.py --workdir=runs/demo")
  if num_processes < 1:
    raise ValueError(f"--num-processes={num_processes} must be >= 1")
  if cpu_devices < 0 or gpus_per_process < 0:
    raise ValueError("--cpu-devices and --gpus-per-process must be >= 0")
  base_env = dict(env)
  device_sets: list[str | None] = [None] * num_processes
  if gpus:
    per = gpus_per_process or gpus // num_processes
    if per < 1 or per * num_processes > gpus:
      raise ValueError(f"--num-processes={num_processes} x --gpus-per-process={per} needs "
                       f"{max(per, 1) * num_processes} GPUs; this machine has {gpus}")
    if num_processes > 1 or gpus_per_process:
      device_sets = [",".join(str(d) for d in range(i * per, (i + 1) * per))
                     for i in range(num_processes)]
  else:
    base_env.setdefault("JAX_PLATFORMS", "cpu")
    if cpu_devices:
      flags = os.environ.get("XLA_FLAGS", "")
      base_env["XLA_FLAGS"] = (
          f"{flags} --xla_force_host_platform_device_count={cpu_devices}".strip())
  workdir = _workdir(command)
  log_dir = log_dir or (os.path.join(workdir, "logs") if workdir and "://" not in workdir
                        else "local-logs")
  port = port or free_port()
  out = []
  for i in range(num_processes):
    argv = list(command)
    if num_processes > 1:
      argv += [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}",
               f"--process_id={i}"]
    process_env = dict(base_env)
    if device_sets[i] is not None:
      process_env["CUDA_VISIBLE_DEVICES"] = device_sets[i]
    out.append(workers.Worker(f"process {i}", tuple(argv),
                              os.path.join(log_dir, f"process-{i}.log"), process_env))
  return out


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  command: list[str] = []
  if "--" in argv:
    i = argv.index("--")
    argv, command = argv[:i], argv[i + 1:]
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=__doc__.split("\n\n", 1)[1])
  p.add_argument("--num-processes", type=int, default=1)
  p.add_argument("--gpus-per-process", type=int, default=0,
                 help="default: the GPUs split evenly (one process: all of them)")
  p.add_argument("--cpu-devices", type=int, default=0,
                 help="simulated devices per CPU process (0: one)")
  p.add_argument("--port", type=int, default=0, help="coordinator port (default: a free one)")
  p.add_argument("--log-dir", default="", help="default: <workdir>/logs")
  p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
  p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  args = p.parse_args(argv)
  env = []
  for item in args.env:
    key, sep, value = item.partition("=")
    if not sep or not key.isidentifier():
      p.error(f"--env={item!r} must be KEY=VALUE")
    env.append((key, value))
  gpus = count_gpus()
  try:
    group = plan(command, num_processes=args.num_processes, gpus=gpus,
                 gpus_per_process=args.gpus_per_process, cpu_devices=args.cpu_devices,
                 port=args.port, log_dir=args.log_dir, env=env)
  except ValueError as e:
    p.error(str(e))
  if not gpus:
    print(f"launch/local.py: no GPU found; running {args.num_processes} process(es) on the "
          "CPU" + (" (gloo collectives between them)" if args.num_processes > 1 else ""),
          file=sys.stderr)
  if args.dry_run:  # exactly the shell lines, so they can be pasted or piped to a shell
    print("\n".join(worker.shell_line() for worker in group), flush=True)
    return 0
  for worker in group:
    print(f"# {worker.label} (log {worker.log}): {worker.shell_line()}", flush=True)
  codes = workers.run_all(group)
  return next((code if code > 0 else 1 for code in codes.values() if code), 0)


if __name__ == "__main__":
  sys.exit(main())
