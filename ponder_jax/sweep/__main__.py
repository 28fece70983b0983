"""`python -m ponder_jax.sweep` is `ponder-sweep`."""

from ponder_jax.sweep.cli import main

if __name__ == "__main__":
  main()
