"""One root exception for the framework; each leaf also inherits the matching builtin."""

from __future__ import annotations


class SpaceTimeError(Exception):
    """Root of every error the framework raises on purpose."""


class ConfigError(SpaceTimeError, ValueError):
    """A configuration value is missing, of the wrong type or makes no sense.

    The message names the full key, the value seen and the fix.
    """


class GodotError(SpaceTimeError):
    """Something went wrong talking to a Godot (or simulator) HTTP server."""

    def __init__(self, message: str, *, url: str = "", endpoint: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.endpoint = endpoint


class GodotConnectionError(GodotError, ConnectionError):
    """The server could not be reached at all."""


class GodotTimeoutError(GodotError, TimeoutError):
    """The server accepted the connection but did not answer in time."""


class GodotHTTPError(GodotError, RuntimeError):
    """The server answered with a non-2xx status."""

    def __init__(self, message: str, *, url: str = "", endpoint: str = "", status: int = 0) -> None:
        super().__init__(message, url=url, endpoint=endpoint)
        self.status = status


class ProtocolError(GodotError, ValueError):
    """The server answered 2xx but the body breaks protocol v1 (shape, type, NaN, missing field)."""


class SpecMismatchError(ProtocolError):
    """The server's `/rl/spec` does not match what this client speaks."""
