"""The errors the engine raises on purpose. Anything else is a bug."""


class LotteryError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class ConfigError(LotteryError, ValueError):
    """A setting is invalid. The message names the field, the bad value and what is allowed."""

    def __init__(self, field: str, value, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        given = "empty" if value is None else f"{value!r} is not valid"  # None: a cleared box, a value not given
        super().__init__(f"{field}: {given}; {allowed}")


class DataUnavailable(LotteryError):
    """A dataset cannot be loaded here (not downloaded, no network, unreadable file)."""


class RunCancelled(LotteryError):
    """Raised inside a run when its cancel flag is set; completed levels stay in the store."""


class Unsupported(LotteryError):
    """This model or this hardware cannot do what was asked (a ResNet's physical shrink, 2:4 kernels on a
    CPU); the message says why."""
