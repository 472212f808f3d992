"""The few exceptions that cross module boundaries.

Each carries a reason a person can read; none ever carries a secret.
"""


class SmscError(Exception):
    """Base of every error this project raises on purpose."""

    @property
    def reason(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class BadRequest(SmscError):
    """The request cannot be read as an SMSC callback (answered with 400)."""


class InvalidSignature(SmscError):
    """The request's hash is missing, of another algorithm, or wrong (answered with 403)."""


class PermanentError(SmscError):
    """A stored payload that no retry will fix: it belongs in the dead letter."""


class ConfigError(SmscError):
    """A setting is missing or dangerous; the process refuses to start."""


class TransientError(SmscError):
    """A failure that a later try may not meet (database down, deadlock): retry."""


class Conflict(PermanentError):
    """An event whose key is already stored with other content: kept aside, both versions visible."""
