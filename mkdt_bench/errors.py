"""The one exception type the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user: names the bad value and what is allowed.

    The CLI prints ``error: <message>`` on one line and exits with status 2.
    """
