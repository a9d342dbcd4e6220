"""Ray Tune sweeps: search spaces from YAML (space.py) and the sweep driver (sweep.py)."""
