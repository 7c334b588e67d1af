"""The error a recipe raises for bad input: the CLI prints its message as one line, exit 2."""


class UsageError(ValueError):
    """An option or input is wrong; the message says what and how to fix it."""
