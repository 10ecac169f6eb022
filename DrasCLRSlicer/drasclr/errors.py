"""Errors the user can act on. The CLI turns them into one ``error: ...`` line and exit code 2."""


class InputError(ValueError):
    """Bad input from the user (file, folder, option, model). The message is shown as is."""
