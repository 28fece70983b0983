"""ponder-jax: data-efficient LM pretraining in JAX/Flax with pondering, pause tokens,
procedural warm-up data and latent thoughts."""

import glob
import importlib.metadata
import importlib.util
import os

__version__ = "0.1.0"

_GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips show up as PCI devices of this vendor
_OTHER_ACCELERATORS = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def _keep_jax_off_libtpu_without_tpus() -> None:
  """Picks the CPU for JAX on a host that has libtpu (the `tpu` extra, which `ponder-aot
  --topology` compiles with) but no TPU chip and no other accelerator plugin.

  Without it JAX loads libtpu whenever it picks a backend: TPU_* warnings on stderr, ~0.5 s, and
  libtpu's process lock (/tmp/libtpu_lockfile) held for the life of e.g. a CPU training run, so
  that the next process to load libtpu fails. An explicit JAX_PLATFORMS (or JAX_FORCE_TPU_INIT)
  always wins; on a TPU VM nothing changes."""
  if os.environ.get("JAX_PLATFORMS") or "JAX_FORCE_TPU_INIT" in os.environ:
    return
  try:
    if importlib.util.find_spec("libtpu") is None:
      return
    if (importlib.util.find_spec("jax_plugins") or importlib.metadata.entry_points(
        group="jax_plugins") or any(os.path.exists(p) for p in _OTHER_ACCELERATORS)):
      return  # a GPU (or other) plugin or device that JAX should find
  except (ImportError, ValueError):
    return
  for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(vendor, encoding="ascii") as f:
        if f.read().strip() == _GOOGLE_PCI_VENDOR:
          return
    except OSError:
      continue
  os.environ["JAX_PLATFORMS"] = "cpu"


_keep_jax_off_libtpu_without_tpus()
