"""ponder-jax: data-efficient LM pretraining in JAX/Flax with pondering, pause tokens,
procedural warm-up data and latent thoughts."""

import glob
import importlib.util
import os

__version__ = "0.1.0"

_GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips show up as PCI devices of this vendor


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
    if importlib.util.find_spec("libtpu") is None or importlib.util.find_spec("jax_plugins"):
      return  # no libtpu, or a GPU (or other) PJRT plugin whose device JAX should find
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
