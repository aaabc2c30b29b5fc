"""What the remote providers share: JSON-schema shaping, reply parsing, and SDK-error mapping.

Nothing here imports an SDK; each provider module imports its own lazily.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import importlib
import json
import math
import re
import time
import weakref
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from ..errors import (
    AuthenticationFailed,
    BadOutput,
    NotConfigured,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    connection_cause,
)
from .base import ProviderConfig, RemoteProvider

__all__ = [
    "SDKProvider",
    "decode_free_form_objects",
    "encode_free_form_objects",
    "inline_refs",
    "map_status_error",
    "parse_json_object",
    "redact",
    "require_sdk",
    "response_json_schema",
    "retry_after_seconds",
    "safe_schema_name",
    "sanitize_schema",
    "transport_error",
]

_MAX_DETAIL = 500  # characters of a provider's error message kept in our exception


def require_sdk(module: str, package: str):
    """Import an SDK module, or raise an ImportError that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f'{module} is needed for this provider but is not installed; install it with: pip install "forgeml[ai]" '
            f"(or pip install {package})"
        ) from exc


# ----------------------------------------------------------------- secrets
def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced, so a key echoed by a server never escapes."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


# ----------------------------------------------------------------- schemas
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")  # name -> sub-schema
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")  # lists of sub-schemas
_SCHEMA_VALUES = ("items", "additionalProperties", "not")  # a single sub-schema


def _map_subschemas(node: dict[str, Any], fn, *, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A copy of ``node`` with ``fn`` applied to each direct sub-schema; keywords in ``skip`` are left out."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in skip:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: fn(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [fn(sub) for sub in value]
        elif key in _SCHEMA_VALUES and isinstance(value, dict):
            out[key] = fn(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def response_json_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema pydantic generates for ``schema``, shaped for a model to fill in.

    OpenAPI's ``discriminator`` keyword is dropped (the ``const`` tags say the
    same in plain JSON Schema), and a ``const`` property (a union's tag, such as
    ``"action": "set_dropout"``) is made required, so that a reply always
    carries the tag the union is parsed by.
    """
    skip = frozenset({"discriminator"})

    def walk(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        out = _map_subschemas(node, walk, skip=skip)
        props = out.get("properties")
        if isinstance(props, dict):
            tags = [k for k, v in props.items() if isinstance(v, dict) and "const" in v]
            required = list(out.get("required", []))
            if any(tag not in required for tag in tags):
                out["required"] = required + [tag for tag in tags if tag not in required]
        return out

    return walk(schema.model_json_schema())


def _resolve(node: Any, root: Mapping[str, Any]) -> Any:
    """Follow a local ``$ref`` (``#/$defs/Name``) to the schema it names."""
    seen = set()
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
        ref = node["$ref"]
        if ref in seen:
            break
        seen.add(ref)
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, Mapping) else None
        if target is None:
            break
        node = target
    return node


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with local ``$ref``s replaced by what they name and ``$defs`` dropped.

    A recursive reference cannot be inlined: it stays, and so does ``$defs``.
    """
    recursive = False

    def walk(node: Any, stack: tuple[str, ...]) -> Any:
        nonlocal recursive
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            if ref in stack:
                recursive = True
                return dict(node)
            target = walk(_resolve({"$ref": ref}, schema), (*stack, ref))
            siblings = _map_subschemas(node, lambda sub: walk(sub, stack), skip=frozenset({"$ref"}))
            return {**target, **siblings}
        return _map_subschemas(node, lambda sub: walk(sub, stack), skip=frozenset({"$defs"}))

    out = walk(schema, ())
    if recursive and "$defs" in schema:
        out["$defs"] = copy.deepcopy(schema["$defs"])
    return out


def _is_free_form(node: Any) -> bool:
    """An object whose keys are not fixed (``dict[str, X]``), or a schema that allows anything (``Any``)."""
    if not isinstance(node, dict):
        return False
    if node.get("type") == "object":
        return not node.get("properties") and node.get("additionalProperties", True) is not False
    schema_keys = {"type", "anyOf", "oneOf", "allOf", "$ref", "enum", "const", "properties", "items"}
    return not (schema_keys & node.keys())


_FREE_FORM_NOTE = "Write this value as a JSON object serialised into a string"


def encode_free_form_objects(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace free-form objects with JSON-encoded strings, for APIs that demand closed objects.

    Anthropic's structured outputs require ``additionalProperties: false`` on
    every object, so ``dict[str, X]`` fields cannot be expressed; they are asked
    for as a string holding the JSON object instead, and
    :func:`decode_free_form_objects` turns them back into objects.
    """

    def walk(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if _is_free_form(node):
            shape = {k: v for k, v in node.items() if k not in ("title", "description")}
            parts = [node["description"]] if node.get("description") else []
            parts.append(f"{_FREE_FORM_NOTE} (JSON schema of the object: {json.dumps(shape, sort_keys=True)}).")
            out = {"type": "string", "description": " ".join(parts)}
            if "title" in node:
                out["title"] = node["title"]
            return out
        return _map_subschemas(node, walk)

    return walk(schema)


def decode_free_form_objects(data: Any, schema: dict[str, Any]) -> Any:
    """Undo :func:`encode_free_form_objects` on a reply, guided by the original (unencoded) ``schema``."""

    def walk(value: Any, node: Any) -> Any:
        node = _resolve(node, schema)
        if not isinstance(node, dict):
            return value
        if _is_free_form(node):
            if isinstance(value, str):
                try:
                    decoded = json.loads(value)
                except ValueError:
                    return value
                return decoded if isinstance(decoded, dict) or node.get("type") != "object" else value
            return value
        variants = node.get("anyOf") or node.get("oneOf")
        if isinstance(variants, list):
            return walk_variants(value, [_resolve(v, schema) for v in variants])
        if isinstance(value, dict) and isinstance(node.get("properties"), dict):
            props = node["properties"]
            return {k: walk(v, props[k]) if k in props else v for k, v in value.items()}
        if isinstance(value, list) and isinstance(node.get("items"), dict):
            return [walk(v, node["items"]) for v in value]
        return value

    def walk_variants(value: Any, variants: list[Any]) -> Any:
        if isinstance(value, str):
            if any(isinstance(v, dict) and v.get("type") == "string" for v in variants):
                return value
            for variant in variants:
                if _is_free_form(variant):
                    return walk(value, variant)
            return value
        if isinstance(value, dict):
            for loose in (False, True):  # first an exact fit; then the variant whose tags (consts) match
                for variant in variants:
                    if _matches_object(value, variant, loose=loose):
                        return walk(value, variant)
            return value
        if isinstance(value, list):
            for variant in variants:
                if isinstance(variant, dict) and variant.get("type") == "array":
                    return walk(value, variant)
        return value

    def _matches_object(value: dict, variant: Any, *, loose: bool) -> bool:
        if not isinstance(variant, dict) or not isinstance(variant.get("properties"), dict):
            return False
        props = variant["properties"]
        if not loose and not set(value) <= set(props):
            return False
        tagged = False
        for key, prop in props.items():
            prop = _resolve(prop, schema)
            if isinstance(prop, dict) and "const" in prop and key in value:
                if value[key] != prop["const"]:
                    return False
                tagged = True
        return tagged or not loose

    return walk(data, schema)


# Keywords Gemini's ``response_json_schema`` understands (google-genai's documentation of the field).
GEMINI_SCHEMA_KEYS = frozenset(
    {
        "$id",
        "$defs",
        "$ref",
        "$anchor",
        "type",
        "format",
        "title",
        "description",
        "enum",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "anyOf",
        "oneOf",
        "properties",
        "additionalProperties",
        "required",
        "propertyOrdering",
    }
)


def sanitize_schema(schema: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """Keep the keywords in ``allowed``; ``const`` becomes a one-value ``enum``; the rest moves into ``description``.

    A node with ``$ref`` keeps only ``$``-keywords (Gemini refuses siblings of ``$ref``).
    """

    def walk(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        node = dict(node)
        if "allOf" in node and "allOf" not in allowed and len(node["allOf"]) == 1:  # pydantic's {"allOf": [{"$ref"}]}
            node = {**node.pop("allOf")[0], **node}
        if "const" in node and "const" not in allowed and "enum" in allowed:
            node["enum"] = [node.pop("const")]
        dropped = frozenset(node) - allowed
        out = _map_subschemas(node, walk, skip=dropped)
        if "$ref" in out:
            return {k: v for k, v in out.items() if k.startswith("$")}
        notes = {k: node[k] for k in node if k in dropped and k != "default" and not isinstance(node[k], (dict, list))}
        if notes and "description" in allowed:
            note = "{" + ", ".join(f"{k}: {v}" for k, v in notes.items()) + "}"
            out["description"] = f"{out['description']}\n\n{note}" if out.get("description") else note
        return out

    return walk(schema)


def safe_schema_name(name: str) -> str:
    """A schema name the OpenAI API accepts (``^[a-zA-Z0-9_-]{1,64}$``)."""
    cleaned = re.sub(r"[^a-zA-Z0-9_-]", "_", name or "")[:64]
    return cleaned or "response"


# ----------------------------------------------------------------- replies
_THINK = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)
_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def parse_json_object(provider: str, text: str | None, *, truncated: bool = False) -> dict[str, Any]:
    """The JSON object in a model's reply, or ``BadOutput`` carrying the raw text.

    Tolerates what models wrap JSON in (a ``<think>`` preamble, a Markdown
    fence); anything else that is not one JSON object is bad output.
    """
    raw = text or ""
    if truncated:
        raise BadOutput(
            provider,
            "the reply was cut off at the output-token limit, so its JSON is incomplete",
            raw=raw,
            cause="invalid response: cut off at the output-token limit",
        )
    if not raw.strip():
        raise BadOutput(
            provider, "the reply was empty; expected a JSON object", raw=raw, cause="invalid response: empty"
        )
    candidates = [raw]
    body = _THINK.sub("", raw, count=1)
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    candidates.append(body)
    start, end = body.find("{"), body.rfind("}")
    if 0 <= start < end:
        candidates.append(body[start : end + 1])
    error: ValueError | None = None
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError as exc:
            error = error or exc
            continue
        if isinstance(value, dict):
            return value
        raise BadOutput(
            provider,
            f"expected a JSON object, got a JSON {type(value).__name__}",
            raw=raw,
            cause="invalid response: not a JSON object",
        )
    raise BadOutput(provider, f"the reply is not valid JSON ({error})", raw=raw, cause="invalid response: not JSON")


# ----------------------------------------------------------------- errors
def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), if present."""
    if not headers:
        return None
    lowered = {str(k).lower(): v for k, v in headers.items()}
    value = lowered.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    value = str(value).strip()
    try:
        seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is not None:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def map_status_error(
    provider: str,
    status: int,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    secret: str | None = None,
) -> ProviderError:
    """The typed error for an HTTP error status (401/403, 429, 408, 5xx, other 4xx)."""
    detail = redact(" ".join(str(message).split()), secret)[:_MAX_DETAIL] or "no message"
    if status in (401, 403):
        return AuthenticationFailed(provider, f"the API key was rejected (HTTP {status}): {detail}", status=status)
    if status == 429:
        wait = retry_after_seconds(headers)
        hint = f", retry after {wait:g} s" if wait is not None else ""
        return RateLimited(provider, f"rate limited (HTTP 429{hint}): {detail}", retry_after=wait, status=status)
    if status == 408:
        return ProviderTimeout(provider, f"the server timed out (HTTP 408): {detail}", status=status)
    if status >= 500:
        wait = retry_after_seconds(headers)
        return ProviderUnavailable(provider, f"server error (HTTP {status}): {detail}", status=status, retry_after=wait)
    return ProviderError(provider, f"the request was refused (HTTP {status}): {detail}", status=status)


def _transport_classes(name: str) -> tuple[type[BaseException], ...]:
    classes = []
    for module in ("httpx", "httpx2"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        cls = getattr(mod, name, None)
        if isinstance(cls, type):
            classes.append(cls)
    return tuple(classes)


def transport_error(
    provider: str, exc: BaseException, timeout: float, secret: str | None = None
) -> ProviderError | None:
    """A ``ProviderTimeout`` or ``ProviderUnavailable`` for a network-level failure, else None."""
    timeouts = (TimeoutError, *_transport_classes("TimeoutException"))
    if isinstance(exc, timeouts):
        return ProviderTimeout(provider, f"no reply within {timeout:g} s", timeout=timeout)
    transport = (ConnectionError, *_transport_classes("TransportError"), *_transport_classes("NetworkError"))
    if isinstance(exc, transport):
        detail = redact(str(exc), secret)[:_MAX_DETAIL] or type(exc).__name__
        return ProviderUnavailable(provider, f"connection failed: {detail}", cause=connection_cause(exc))
    return None


# ----------------------------------------------------------------- plumbing
class SDKProvider(RemoteProvider):
    """Plumbing shared by the SDK-backed providers.

    It holds the key (never shown), one SDK client per event loop (an async
    HTTP pool belongs to the loop that opened it), a wall-clock timeout around
    each call, and the mapping of SDK failures to typed errors. Subclasses
    implement :meth:`_make_client`, :meth:`_map_error` and ``complete``.
    """

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        self._client: Any = None
        self._client_key: tuple[Any, ...] | None = None
        self._client_loop: weakref.ref | None = None

    @property
    def base_url(self) -> str | None:
        return self.config.base_url or self.default_base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r}, configured={self.configured})"

    def _secret(self) -> str:
        if not self.config.enabled:
            raise NotConfigured(self.name, "the provider is disabled")
        key = self.config.api_key.get_secret_value() if self.config.api_key is not None else ""
        if not key:
            raise NotConfigured(self.name, f"no API key (set {self.key_env})")
        return key

    def _get_client(self, secret: str) -> Any:
        loop = asyncio.get_running_loop()
        fingerprint = (hash(secret), self.base_url)
        same_loop = self._client_loop is not None and self._client_loop() is loop
        if self._client is None or self._client_key != fingerprint or not same_loop:
            self._client = self._make_client(secret)
            self._client_key = fingerprint
            self._client_loop = weakref.ref(loop)
        return self._client

    def _make_client(self, secret: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _map_error(self, exc: BaseException, timeout: float, secret: str) -> ProviderError | None:  # pragma: no cover
        raise NotImplementedError

    async def _call(self, fn, timeout: float) -> Any:
        """``await fn(client)`` within ``timeout`` seconds; SDK failures come out as typed errors."""
        secret = self._secret()
        client = self._get_client(secret)
        try:
            async with asyncio.timeout(timeout):
                return await fn(client)
        except ProviderError:
            raise
        except TimeoutError:  # asyncio.timeout's deadline
            raise ProviderTimeout(self.name, f"no reply within {timeout:g} s", timeout=timeout) from None
        except Exception as exc:  # mapped to a typed error when it is the SDK's or the network's; else re-raised
            mapped = self._map_error(exc, timeout, secret) or transport_error(self.name, exc, timeout, secret)
            if mapped is None:
                raise
            raise mapped from None

    async def _close_client(self, client: Any) -> None:
        await client.close()

    async def aclose(self) -> None:
        """Close the SDK client's connections (a later call opens a new one).

        A client opened on another event loop is only dropped: its connections
        belong to that loop and cannot be closed from this one.
        """
        client, loop_ref = self._client, self._client_loop
        self._client, self._client_key, self._client_loop = None, None, None
        if client is not None and loop_ref is not None and loop_ref() is asyncio.get_running_loop():
            await self._close_client(client)
