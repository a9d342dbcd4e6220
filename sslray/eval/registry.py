"""The evaluation protocols of ``sslray eval --protocol NAME``, by name: the one place that lists them.

An entry is all the rest of ``sslray eval`` needs to know about a protocol: the function that runs it,
``(encoder, splits, options, context) -> row dict``, or a ``Trained`` when it trains (see
``sslray.eval.protocols``); the ``EvalOptions`` field holding its options dataclass; its name in plot
titles and reports; and whether it trains, in which case its per-epoch history and val predictions
become ``curves.png``, TensorBoard scalars, ``per_class.md`` and ``confusion.png``. Adding a protocol
is a module with its run function and options dataclass, that dataclass as a field of ``EvalOptions``,
and an entry here.

Run functions are named as "module:function" and imported on first use: the command line builds its
``--protocol`` choices from this table and must not import torch just to parse arguments.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sslray.eval.features import Encoder
    from sslray.eval.protocols import EvalContext, EvalOptions, EvalSplits, Trained


@dataclass(frozen=True)
class Protocol:
    runner: str  # "module:function" running it: (encoder, splits, EvalOptions, EvalContext) -> dict | Trained
    section: str  # the EvalOptions field holding its options dataclass
    display: str  # its name in plot titles and reports; "{field}" takes that field of its options
    trains: bool  # trained for epochs: per-epoch history (curves) and val predictions (per-class report)

    def options(self, options: EvalOptions) -> Any:
        """Its own options dataclass within ``options``, e.g. ``options.knn``."""
        return getattr(options, self.section)

    def title(self, options: EvalOptions) -> str:
        """Its display name with its options filled in, e.g. "kNN (k=20)"."""
        return self.display.format(**asdict(self.options(options)))

    def run(self, encoder: Encoder, splits: EvalSplits, options: EvalOptions, context: EvalContext) -> dict | Trained:
        module, _, function = self.runner.partition(":")
        return getattr(importlib.import_module(module), function)(encoder, splits, options, context)


PROTOCOLS: dict[str, Protocol] = {
    "knn": Protocol("sslray.eval.protocols:run_knn", "knn", "kNN (k={k})", trains=False),
    "linear": Protocol("sslray.eval.protocols:run_linear", "probe", "linear probe", trains=True),
    "finetune": Protocol("sslray.eval.protocols:run_finetune", "finetune", "fine-tune", trains=True),
}
