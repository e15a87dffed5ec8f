"""The exception types the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user: names the bad value and what is allowed.

    The CLI prints ``error: <message>`` on one line and exits with status 2.
    """


class MissingDataError(UserError):
    """A data set's files are not where they should be (and cannot be downloaded).

    ``path`` is the file or folder that is missing. As the source of a run this is an
    ordinary UserError; as a downstream task it turns the task's cells into
    ``n/a (missing: <path>)`` rows while the rest of the grid runs.
    """

    def __init__(self, message: str, path: object) -> None:
        super().__init__(message)
        self.path = str(path)
