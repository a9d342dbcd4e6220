"""The training layer (worker loop, Ray Train session, trainer, export), and ``sslray.train(...)``.

``sslray.train`` is both this package and the Python API's function (``sslray.api.train``): once any
``sslray.train.*`` module is imported, Python binds the name on ``sslray`` to this package, so the
package is made callable and a call goes to the API, by name (the API is the layer above this one).
"""

from __future__ import annotations

import importlib
import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return importlib.import_module("sslray.api").train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
