"""The one error type users see: a single line that names the file, column or key at fault; and the one check of
a path given by the user, whose message says what is there when it is not what was wanted."""

from __future__ import annotations

from pathlib import Path


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


def path_kind(path: Path) -> str | None:
    """What is at `path`, in a message's words: "file", "folder", "special file (...)", or None for nothing."""
    if path.is_dir():
        return "folder"
    if path.is_file():
        return "file"
    if path.exists():
        return "special file (a pipe, socket or device)"
    return None


def require_path(path: str | Path, kind: str | None, noun: str, key: str | None = None, if_missing: str = "") -> None:
    """`path` must be an existing `kind` ("file", "folder", or None for either): otherwise one line saying what is
    there instead, so a folder given for a file is "a folder, not a data file", never "does not exist".

    `noun` names what was wanted ("data file", "run folder"), `key` the recipe key or option that gave the path,
    `if_missing` a hint added when nothing is there. The path is shown as given (`~` and all).
    """
    given = f" ('{key}')" if key else ""
    found = path_kind(Path(path).expanduser())
    if found is None:
        raise HubtuneError(f"{noun} '{path}'{given} does not exist{if_missing}")
    if found != kind and not (kind is None and found in ("file", "folder")):
        article = "an" if noun[:1].lower() in "aeiou" else "a"
        raise HubtuneError(f"'{path}'{given} is a {found}, not {article} {noun}")
