"""The one exception type for a user's mistake.

Anything raised as ``UserError`` reaches the command line as a single clear message and exit code 2
(see ``sslray.cli``); everything else is a bug and keeps its traceback (exit code 1).
"""


class UserError(Exception):
    """A mistake in what the user gave us (a path, a YAML key, a value): say what, where, and what is allowed."""
