"""The sweep root's HParams experiment config, written before the first trial.

Without one, TensorBoard's HParams tab takes its columns from one trial's session summary: a knob that
trial's method does not have (``method.temperature`` on a BYOL trial) vanishes from the table, and the
metric columns come in that trial's order. TensorBoard's documented remedy is an experiment summary at
the root of the log directory listing every hyperparameter with its domain and every metric; this one
lists every swept knob (``method.name`` first, then as the space orders them) and the sweep's metric
first (best, epoch of best, last), then the loss. Trials keep writing their own session summaries
(``RunLogger.hparams``), which the table fills in under these columns.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tensorboard.plugins.hparams import summary_v2 as hp

from sslray.runs import storage
from sslray.tune.space import SearchSpace


def _domain(spec: dict):
    ((form, args),) = spec.items()
    if form in ("choice", "grid"):
        values = list(args)
        if all(isinstance(v, bool) for v in values) or all(isinstance(v, str) for v in values):
            return hp.Discrete(values)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return hp.Discrete([float(v) for v in values])
        return hp.Discrete([str(v) for v in values])  # a mixed list: shown as text, as trials log it
    if form == "randint":
        return hp.IntInterval(int(args[0]), int(args[1]))
    return hp.RealInterval(float(args[0]), float(args[1]))


def hparams_config(space: SearchSpace):
    """The experiment summary (a ``Summary`` proto) for ``space``."""
    keys = sorted(space.knobs, key=lambda k: k != "method.name")  # stable: the space's order otherwise
    metric = space.tune.metric
    metrics = [f"best_{metric}", f"best_epoch_{metric}", metric, "loss"]
    return hp.hparams_config_pb(
        hparams=[hp.HParam(key, _domain(space.knobs[key])) for key in keys],
        metrics=[hp.Metric(f"hparams/{name}", display_name=name) for name in metrics],
    )


def write_hparams_config(space: SearchSpace, sweep_dir: str) -> None:
    """Write the config as an event file at the sweep root (a path, or a URI through a local copy)."""
    from torch.utils.tensorboard import SummaryWriter

    def write(folder: str) -> None:
        with SummaryWriter(log_dir=folder) as writer:
            writer.file_writer.add_summary(hparams_config(space), 0)

    if not storage.is_uri(sweep_dir):
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        write(sweep_dir)
        return
    with tempfile.TemporaryDirectory() as tmp:
        write(tmp)
        storage.upload_folder(Path(tmp), sweep_dir)
