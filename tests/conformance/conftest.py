"""Conformance fixtures: the server under test, a raw HTTP caller and a validator for docs/openapi.yaml.

The validator covers the JSON Schema subset the document uses and refuses any other keyword, so the
document cannot silently say more than is checked.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from spacetime_rl.protocol import wire

OPENAPI_PATH = Path(__file__).parents[2] / "docs" / "openapi.yaml"
ANNOTATIONS = frozenset({"description", "example", "default", "title", "summary"})
JSON_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


class OpenAPI:
    """docs/openapi.yaml, with `errors(schema, value)` over the keywords it uses."""

    def __init__(self, path: Path = OPENAPI_PATH) -> None:
        self.document: dict[str, Any] = yaml.safe_load(path.read_text())
        self.schemas: dict[str, Any] = self.document["components"]["schemas"]

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise ValueError(f"only local $refs are supported, got {ref}")
            target: Any = self.document
            for part in ref[2:].split("/"):
                target = target[part]
            node = target
        return node

    def response_schema(self, method: str, path: str, status: int) -> dict[str, Any]:
        """The schema for one documented answer; unknown paths answer the Error schema."""
        operation = self.document["paths"].get(path, {}).get(method.lower())
        if operation is None:
            assert status in (401, 404), f"{method} {path} is not in docs/openapi.yaml but answered {status}"
            return self.schemas["Error"]
        responses = operation["responses"]
        assert str(status) in responses, (
            f"{method} {path} answered {status}; docs/openapi.yaml documents only {sorted(responses)}"
        )
        return self.resolve(responses[str(status)])["content"]["application/json"]["schema"]

    def errors(self, schema: dict[str, Any], value: Any, at: str = "$") -> list[str]:
        schema = self.resolve(schema)
        found: list[str] = []
        for keyword, expected in schema.items():
            if keyword in ANNOTATIONS:
                continue
            check = getattr(self, f"_{keyword}", None)
            if check is None:
                raise ValueError(
                    f"docs/openapi.yaml uses {keyword!r}, which the test validator does not check"
                )
            found += check(expected, value, at, schema)
        return found

    def _type(self, expected: str | list[str], value: Any, at: str, _: Any) -> list[str]:
        names = [expected] if isinstance(expected, str) else expected
        if any(JSON_TYPES[name](value) for name in names):
            return []
        return [f"{at}: {value!r:.60} is not of type {expected}"]

    def _required(self, expected: list[str], value: Any, at: str, _: Any) -> list[str]:
        if not isinstance(value, dict):
            return []
        return [f"{at}: missing required field '{key}'" for key in expected if key not in value]

    def _properties(self, expected: dict[str, Any], value: Any, at: str, _: Any) -> list[str]:
        if not isinstance(value, dict):
            return []
        return [
            e
            for key, sub in expected.items()
            if key in value
            for e in self.errors(sub, value[key], f"{at}.{key}")
        ]

    def _additionalProperties(self, expected: Any, value: Any, at: str, schema: dict[str, Any]) -> list[str]:
        if not isinstance(value, dict):
            return []
        extra = [key for key in value if key not in schema.get("properties", {})]
        if expected is False:
            return [f"{at}: unexpected field '{key}'" for key in extra]
        if expected is True:
            return []
        return [e for key in extra for e in self.errors(expected, value[key], f"{at}.{key}")]

    def _propertyNames(self, expected: dict[str, Any], value: Any, at: str, _: Any) -> list[str]:
        if not isinstance(value, dict):
            return []
        return [e for key in value for e in self.errors(expected, key, f"{at}[name {key!r}]")]

    def _items(self, expected: dict[str, Any], value: Any, at: str, _: Any) -> list[str]:
        if not isinstance(value, list):
            return []
        return [e for i, item in enumerate(value) for e in self.errors(expected, item, f"{at}[{i}]")]

    def _minItems(self, expected: int, value: Any, at: str, _: Any) -> list[str]:
        ok = not isinstance(value, list) or len(value) >= expected
        return [] if ok else [f"{at}: {len(value)} items, fewer than {expected}"]

    def _maxItems(self, expected: int, value: Any, at: str, _: Any) -> list[str]:
        ok = not isinstance(value, list) or len(value) <= expected
        return [] if ok else [f"{at}: {len(value)} items, more than {expected}"]

    def _uniqueItems(self, expected: bool, value: Any, at: str, _: Any) -> list[str]:
        ok = (
            not expected or not isinstance(value, list) or len({orjson.dumps(v) for v in value}) == len(value)
        )
        return [] if ok else [f"{at}: items are not unique"]

    def _minLength(self, expected: int, value: Any, at: str, _: Any) -> list[str]:
        return [f"{at}: shorter than {expected}"] if isinstance(value, str) and len(value) < expected else []

    def _pattern(self, expected: str, value: Any, at: str, _: Any) -> list[str]:
        ok = not isinstance(value, str) or re.search(expected, value)
        return [] if ok else [f"{at}: {value!r} does not match {expected}"]

    def _minimum(self, expected: float, value: Any, at: str, _: Any) -> list[str]:
        ok = not JSON_TYPES["number"](value) or value >= expected
        return [] if ok else [f"{at}: {value} < {expected}"]

    def _exclusiveMinimum(self, expected: float, value: Any, at: str, _: Any) -> list[str]:
        ok = not JSON_TYPES["number"](value) or value > expected
        return [] if ok else [f"{at}: {value} <= {expected}"]

    def _enum(self, expected: list[Any], value: Any, at: str, _: Any) -> list[str]:
        return [] if value in expected else [f"{at}: {value!r} not one of {expected}"]

    def _const(self, expected: Any, value: Any, at: str, _: Any) -> list[str]:
        return [] if value == expected else [f"{at}: {value!r:.80} is not {expected!r:.80}"]


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # decoded JSON, or None when the body is not JSON
    raw: bytes


@dataclass
class Target:
    """The server under test: an external one from --server-url, or the embedded simulator."""

    url: str
    token: str | None
    external: bool

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        token: str | bool | None = True,
    ) -> Reply:
        """`body` is sent as JSON, `data` as raw bytes; token=True uses the target's token, None none."""
        if body is not None:
            data = orjson.dumps(body)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        bearer = self.token if token is True else token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.request(method, self.url + path, data=data, headers=headers) as response,
        ):
            raw = await response.read()
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            decoded = None
        return Reply(response.status, decoded, raw)


@pytest.fixture(scope="session")
def openapi() -> OpenAPI:
    return OpenAPI()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Target:
    """The server under test; the embedded simulator (from `sim_server`) unless --server-url is given."""
    url = request.config.getoption("--server-url")
    if url is None:
        return Target(request.getfixturevalue("sim_server"), None, external=False)
    return Target(url.rstrip("/"), request.config.getoption("--server-token"), external=True)


@pytest.fixture
async def target(server: Target) -> Target:
    """`server` with an RL scene loaded."""
    state = await server.call("GET", "/scene/state")
    if not (state.status == 200 and state.body.get("rl_ready")):
        loaded = await server.call("POST", "/scene/load", {"scene": wire.DEFAULT_SCENE})
        assert loaded.status == 200, f"cannot load {wire.DEFAULT_SCENE} on {server.url}: {loaded.raw[:200]!r}"
    return server


@pytest.fixture
def own_sim(request: pytest.FixtureRequest, server: Target) -> Callable[..., Awaitable[str]]:
    """`start_sim` for tests that need a server configured their way; skipped against --server-url."""
    if server.external:
        pytest.skip("needs a server this suite starts itself (not possible with --server-url)")
    return request.getfixturevalue("start_sim")
