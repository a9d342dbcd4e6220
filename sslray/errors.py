"""The one exception type for a user's mistake.

Anything raised as ``UserError`` reaches the command line as a single clear message and exit code 2
(see ``sslray.cli``); everything else is a bug and keeps its traceback (exit code 1).
"""


class UserError(Exception):
    """A mistake in what the user gave us (a path, a YAML key, a value): say what, where, and what is allowed.

    The message is kept to one line (line breaks inside it, e.g. from a parser's message or a YAML key
    with a newline, become spaces): the command line prints it as the single line ``sslray: error: ...``.
    """

    def __init__(self, message: str = ""):
        message = str(message)
        lines = message.splitlines()
        if len(lines) > 1:
            message = " ".join(line.strip() for line in lines if line.strip())
        super().__init__(message)
