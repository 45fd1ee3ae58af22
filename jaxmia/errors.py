"""The one exception type for mistakes a user can make (config, CLI, data, paths).

The command line turns it into a single line on stderr and exit code 2; anything
else that goes wrong is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: the message is shown as is, on one line."""
