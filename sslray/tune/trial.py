"""One trial of a sweep: the Tune function that trains one sampled recipe, and its folder's name.

One trial = one Tune function (``run_trial``) that trains one fixed recipe (docs/ray.md §1):

- ``scaling.num_workers: 1`` -> the worker loop runs in the trial's own process (``TuneTrialSession``):
  about a second to start, and it reports checkpoints to Tune itself, so PBT can exploit and a
  restored sweep continues each unfinished trial from its last epoch;
- more workers -> the trial fits a ``TorchTrainer`` whose rank 0 reaches Tune through
  ``TuneReportCallback`` (ASHA / median stopping work; PBT cannot, docs/ray.md §5).

A sweep in object storage (a URI): each trial trains in a node-local folder that it mirrors to
``<sweep>/<trial>`` every epoch; checkpoints reach storage through Tune.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sslray.recipe import recipe_from_dict
from sslray.runs import storage
from sslray.train.trainer import plain
from sslray.tune.resources import ResourcePlan
from sslray.tune.space import SearchSpace


def run_trial(config: dict[str, Any], space: SearchSpace, plan: ResourcePlan, sweep_dir: str) -> None:
    """One trial: the sampled recipe, trained in-process (one worker) or by a TorchTrainer. It writes
    into its folder of the sweep (Tune's trial folder in the storage path), not into Tune's local
    staging copy (``get_trial_dir()``), which is synced only now and then and lost with the node.
    A sweep in object storage (``sweep_dir`` a URI): the trial trains in a node-local folder and rank 0
    mirrors it to ``<sweep_dir>/<trial>`` after every epoch."""
    from ray import tune

    from sslray.train.session import TuneTrialSession
    from sslray.train.trainer import fit, write_config
    from sslray.train.worker import run_worker

    recipe_dict = space.trial_recipe(config)
    if plan.cpus_per_worker is not None:
        recipe_dict.setdefault("scaling", {})["cpus_per_worker"] = plan.cpus_per_worker
    recipe = recipe_from_dict(recipe_dict)
    trial_name = tune.get_context().get_trial_name()  # == its folder name (trial_dirname)
    if storage.is_uri(sweep_dir):
        trial_dir, trial_storage = staging_folder(sweep_dir, trial_name), storage.join(sweep_dir, trial_name)
    else:
        trial_dir, trial_storage = Path(sweep_dir) / trial_name, None
    write_config(recipe, trial_dir)
    hparams = space.applicable(config)
    if recipe.scaling.num_workers == 1:
        run_worker(
            {
                "recipe": plain(recipe.to_dict()),
                "run_dir": str(trial_dir),
                "storage": trial_storage,
                "hparams": hparams,
                "torch_threads": plan.torch_threads,
            },
            TuneTrialSession(recipe.scaling.use_gpu),
        )
    else:
        from ray.tune.integration.ray_train import TuneReportCallback

        fit(
            recipe,
            trial_dir,
            callbacks=[TuneReportCallback()],
            hparams=hparams,
            summary_file=None,
            storage_uri=trial_storage,
        )


def staging_folder(sweep_uri: str, name: str) -> Path:
    """Node-local folder ``name`` (a trial's, the driver's logs) of a sweep that lives at a URI (a hash keeps
    two sweeps of one name apart)."""
    import hashlib

    key = hashlib.sha1(sweep_uri.encode()).hexdigest()[:8]
    return storage.local_staging(f"{storage.split_parent(sweep_uri)[1]}-{key}", name)


def trial_dirname(trial, default_method: str) -> str:
    """``simclr_3f2a1_00002``: the method first, so TensorBoard's run list reads at a glance."""
    return f"{trial.config.get('method.name', default_method)}_{trial.trial_id}"


def trainable(space: SearchSpace, plan: ResourcePlan, sweep_dir: str):
    """``run_trial`` bound to this sweep, with the plan's resources: what the Tuner runs."""
    from ray import tune

    trial = tune.with_parameters(run_trial, space=space, plan=plan, sweep_dir=sweep_dir)
    return tune.with_resources(trial, plan.trial)
