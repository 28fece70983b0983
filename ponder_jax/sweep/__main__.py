from ponder_jax.sweep.cli import main

main()
