"""Errors the user can act on. The CLI turns them into one ``error: ...`` line and exit code 2."""


class InputError(ValueError):
    """Bad input from the user (file, folder, option, model). The message is shown as is."""


class Terminated(BaseException):
    """The process received SIGTERM (see ``drasclr.core.outputs.terminate_on_signals``): unwind, cleaning up."""
