"""Which requests a protocol v1 server answers at all: none from web pages, none by DNS rebinding.

A server without a token (the default, as Godot debug builds serve on 127.0.0.1:8080) would
otherwise obey any web page the developer has open: a page may POST a "simple request"
(`Content-Type: text/plain`, no preflight) to 127.0.0.1, and a DNS-rebinding page reaches it under
its own host name. So, as Jupyter and the Docker API do, every server refuses, before anything
else (the token included):

- a `Host` that is not a loopback name or address, nor one the user allowed (403): rebinding;
- any `Origin` header the user did not allow (403): browsers send one on every cross-site POST,
  Python clients never do;
- a body whose `Content-Type` is not JSON or the binary step type (415): no simple requests.

The Godot addon applies the same rules (godot/addons/spacetime_rl/rl_http_server.gd).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Collection
from typing import Final

#: Host names that always mean this machine (RFC 6761 reserves `localhost` and its subdomains).
LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})
#: Media types a request body may have: protocol v1 bodies are JSON.
BODY_TYPES: Final = frozenset({"application/json", "application/octet-stream"})
#: An allowed-hosts entry that allows every host (for a server behind a proxy that checks them).
ANY_HOST: Final = "*"


def host_name(host_header: str) -> str:
    """The host of a `Host` header value, without its port and brackets, lower case."""
    value = host_header.strip().lower()
    if value.startswith("["):  # [::1]:8080
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:  # name:port; more colons is a bare IPv6 address
        value = value.partition(":")[0]
    return value.rstrip(".")


@functools.lru_cache(maxsize=256)  # every request asks, nearly always with the same Host
def is_loopback(host: str) -> bool:
    """True for a loopback address (127.0.0.0/8, ::1) or a name that always means this machine."""
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_valid_token(token: str) -> bool:
    """A token travels in an HTTP header: 1 to 256 visible ASCII characters, no spaces (a non-ASCII
    one could never match in the addon, which decodes header bytes one by one)."""
    return 0 < len(token) <= 256 and token.isascii() and token.isprintable() and " " not in token


#: What a bad token is told, by whichever key or flag set it (the value, a secret, is not repeated).
TOKEN_FIX: Final = (
    "must be 1 to 256 visible ASCII characters without spaces, as it travels in an HTTP header; "
    "e.g. python -c 'import secrets; print(secrets.token_urlsafe())'"
)


def refusal(
    *,
    host: str | None,
    origin: str | None,
    content_type: str | None,
    has_body: bool,
    allowed_hosts: Collection[str] = (),
    allowed_origins: Collection[str] = (),
) -> tuple[int, str] | None:
    """(status, message) when a request must be refused before it is served, else None.

    `host` and `origin` are the raw header values (None when absent: a client that sends no Host
    is no browser); `content_type` the request's media type (parameters ignored).
    """
    if host is not None:
        name = host_name(host)
        if not (is_loopback(name) or name in allowed_hosts or ANY_HOST in allowed_hosts):
            return 403, (
                f"Host {host[:80]!r} is not this machine: the server answers loopback names only, so a web "
                "page cannot reach it by DNS rebinding; allow the name with --allowed-host (Godot: "
                "--rl-allowed-host) if clients use it"
            )
    if origin is not None and origin not in allowed_origins:
        return 403, (
            f"requests from web pages (Origin {origin[:80]!r}) are refused: a page the developer has "
            "open must not drive the game; allow an origin with --allowed-origin (Godot: --rl-allowed-origin)"
        )
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if has_body and media_type not in BODY_TYPES:
        return 415, (
            f"a request body must be Content-Type: application/json, not {media_type or 'none'!r}; "
            "send the JSON body with that header"
        )
    return None
