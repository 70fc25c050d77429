"""The one error type users see: a single line that names the file, column or key at fault."""


class HubtuneError(Exception):
    """Bad input or an unusable environment. The CLI prints the message on one line and exits with 2."""

    exit_code = 2

    def __init__(self, message: str):
        # One line, always: a multi-line message from a library we wrap is folded, never dropped.
        super().__init__(" ".join(str(message).split()))


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, with what to do next. Still a KeyboardInterrupt for code that catches those; the
    CLI prints the message on one line and exits with 130, as a shell does for an interrupted command."""

    exit_code = 130

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class RunFailed(HubtuneError):
    """An unexpected error during training (a bug, a library's failure), told in one line with the last complete
    checkpoint; the original error is its `__cause__`, whose traceback the CLI writes to a file for bug reports.
    Exit code 1, as for any program that failed, where bad input is 2."""

    exit_code = 1
