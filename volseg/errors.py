"""The one exception type for errors a user can cause."""

from __future__ import annotations


class VolsegError(Exception):
    """A problem with the user's input: a file, a manifest, a config key or an option.

    The message is one line that names the file or key and says what to do. The CLI prints it
    without a traceback and exits with status 2. Bugs raise ordinary exceptions instead.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
