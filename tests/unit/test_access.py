"""Which requests a server refuses before serving them (protocol/access.py): web pages, rebinding."""

from __future__ import annotations

import pytest

from spacetime_rl.protocol import access


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8080", "127.0.0.1"),
        ("LOCALHOST", "localhost"),
        ("[::1]:8080", "::1"),
        ("::1", "::1"),
        ("evil.example.:80", "evil.example"),
        ("[::1", "[::1"),
    ],
)
def test_host_name_drops_port_brackets_and_case(header: str, name: str) -> None:
    assert access.host_name(header) == name


@pytest.mark.parametrize("host", ["localhost", "app.localhost", "127.0.0.1", "127.9.8.7", "::1"])
def test_loopback_hosts(host: str) -> None:
    assert access.is_loopback(host)


@pytest.mark.parametrize(
    "host", ["evil.example", "0.0.0.0", "192.168.1.2", "localhost.evil.example", "", "::"]
)
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not access.is_loopback(host)


def test_the_issue_attack_is_refused_and_each_part_alone_too() -> None:
    page = {"origin": None, "content_type": "application/json", "has_body": True}
    assert access.refusal(**(page | {"host": "evil.example"}))[0] == 403  # type: ignore[arg-type,index]
    assert access.refusal(**(page | {"host": "127.0.0.1", "origin": "http://evil.example"}))[0] == 403  # type: ignore[arg-type,index]
    assert access.refusal(**(page | {"host": "127.0.0.1", "content_type": "text/plain"}))[0] == 415  # type: ignore[arg-type,index]
    assert access.refusal(**(page | {"host": "127.0.0.1"})) is None  # type: ignore[arg-type]


def test_allowed_hosts_and_origins_and_bodiless_requests_pass() -> None:
    assert (
        access.refusal(
            host="sim.internal",
            origin=None,
            content_type=None,
            has_body=False,
            allowed_hosts={"sim.internal"},
        )
        is None
    )
    assert (
        access.refusal(host="any.where", origin=None, content_type=None, has_body=False, allowed_hosts={"*"})
        is None
    )
    assert (
        access.refusal(
            host=None,
            origin="http://tool",
            content_type="application/json; charset=utf-8",
            has_body=True,
            allowed_origins={"http://tool"},
        )
        is None
    )
    assert access.refusal(host="localhost", origin=None, content_type=None, has_body=False) is None


@pytest.mark.parametrize(
    ("token", "valid"), [("s3cr3t-Token_", True), ("a b", False), ("tökén", False), ("", False)]
)
def test_tokens_are_visible_ascii(token: str, valid: bool) -> None:
    assert access.is_valid_token(token) is valid


def test_a_bad_env_token_is_refused_at_config_time_without_echoing_it() -> None:
    from spacetime_rl.config import compose_train_config
    from spacetime_rl.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"env\.token is invalid: it must be 1 to 256 visible ASCII"
    ) as info:
        compose_train_config(["env=godot", "env.url=http://127.0.0.1:8080", "env.token='my secret'"])
    assert "my secret" not in str(info.value)
