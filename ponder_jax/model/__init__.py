"""The decoder (transformer.py), its attention (attention.py) and the pondering loop (ponder.py)."""
