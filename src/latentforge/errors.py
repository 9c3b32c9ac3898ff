"""The one exception type for mistakes a user can fix (bad data, bad flags, missing files).

The CLI prints these as a single ``error: …`` line with exit code 2; anything else is a bug
and keeps its traceback.
"""


class UserError(ValueError):
    """A problem with the user's input, with a message that says how to fix it."""
