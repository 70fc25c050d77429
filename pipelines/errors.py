"""The one error type users see: a single line that names the file, column or key at fault."""


class HubtuneError(Exception):
    """Bad input or an unusable environment. The CLI prints the message on one line and exits with 2."""

    exit_code = 2

    def __init__(self, message: str):
        # One line, always: a multi-line message from a library we wrap is folded, never dropped.
        super().__init__(" ".join(str(message).split()))


class Terminated(KeyboardInterrupt):
    """SIGTERM, which clusters send before they kill a job: stopped like Ctrl-C (the same cleanup and message, as
    the same KeyboardInterrupt), but exiting with 143 (128 + 15) as a process ended by SIGTERM does."""

    exit_code = 143
    verb = "terminated"


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during training, with what to do next. Still a KeyboardInterrupt for code that catches
    those; the CLI prints the message on one line and exits with 130 (143 after SIGTERM), as a shell does."""

    def __init__(self, message: str, exit_code: int = 130, verb: str = "interrupted"):
        super().__init__(" ".join(str(message).split()))
        self.exit_code = exit_code
        self.verb = verb


class RunFailed(HubtuneError):
    """An unexpected error during training (a bug, a library's failure), told in one line with the last complete
    checkpoint; the original error is its `__cause__`, whose traceback the CLI writes to a file for bug reports.
    Exit code 1, as for any program that failed, where bad input is 2."""

    exit_code = 1
