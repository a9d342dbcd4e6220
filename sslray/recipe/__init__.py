"""The YAML recipe: one file fixes every value of a run (README, "`sslray train RECIPE`").

Sections: ``method`` (name + knobs, see each method's config), ``backbone``, ``data``, ``optim``,
``train``, ``scaling``. A search space is the same file with distributions in place of some values
(``{loguniform: [1e-4, 1e-2]}``); ``sslray train`` refuses those, ``sslray sweep`` explores them.

Loading is ``yaml.safe_load`` only (``!!python`` tags are refused), then ``key.path=value`` overrides
from the command line, then validation: unknown keys, wrong types and values out of range are
``UserError``s that name the dotted key, the value and what is allowed.

    yaml_io    reading YAML safely, overrides, finding search distributions
    schema     ``Recipe`` and the data / train / scaling sections
    validate   ``recipe_from_dict`` and ``load_recipe``
"""

from sslray.recipe.schema import SECTIONS, DataConfig, Recipe, ScalingConfig, TrainConfig
from sslray.recipe.validate import load_recipe, recipe_from_dict
from sslray.recipe.yaml_io import (
    DISTRIBUTIONS,
    MAX_DEPTH,
    MAX_VALUES,
    apply_overrides,
    check_tree,
    find_distributions,
    parse_yaml,
    read_yaml,
)

__all__ = [
    "DISTRIBUTIONS",
    "MAX_DEPTH",
    "MAX_VALUES",
    "SECTIONS",
    "DataConfig",
    "Recipe",
    "ScalingConfig",
    "TrainConfig",
    "apply_overrides",
    "check_tree",
    "find_distributions",
    "load_recipe",
    "parse_yaml",
    "read_yaml",
    "recipe_from_dict",
]
