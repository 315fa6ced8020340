"""Error types whose messages a user can act on.

The CLI turns any `GossipmeshError` into one line on stderr and an exit
status, never a traceback; so every message here must make sense alone.
"""


class GossipmeshError(Exception):
    """Base of every error that is reported to the user as one line."""

    exit_status = 1


class UsageError(GossipmeshError):
    """The user asked for something that cannot work as given (exit 2)."""

    exit_status = 2


class KeyFileError(UsageError):
    """A key file is missing, unreadable, malformed or too permissive."""


class ConfigError(UsageError):
    """A configuration file or value is invalid; the message names which."""


class LabelError(UsageError):
    """A DNS label does not follow the rules (RFC 1035 letters-digits-hyphen)."""
