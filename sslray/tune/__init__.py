"""Ray Tune sweeps: search distributions (distributions.py), the ``tune:`` section (section.py),
schedulers and searchers by name (registry.py), search spaces from YAML (space.py), the resource plan
(resources.py), the trial function (trial.py), the sweep driver (sweep.py) and its results
(results.py, leaderboard.py)."""
