"""OpenAI, and the two providers that serve OpenAI-compatible APIs (Perplexity, xAI), through the ``openai`` SDK.

Each call is one chat completion with a JSON-schema ``response_format``. The
schema is sent non-strict (``strict: false``): OpenAI's strict mode demands
that every property be required and every object closed, which rules out the
``dict`` fields and optional fields our response models have; the
orchestrator validates the reply against the pydantic model instead.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel

from ..errors import BadOutput, ProviderError, ProviderTimeout, ProviderUnavailable, connection_cause
from ..models import PROVIDER_DEFAULTS
from ._common import (
    SDKProvider,
    inline_refs,
    map_status_error,
    parse_json_object,
    redact,
    require_sdk,
    response_json_schema,
    safe_schema_name,
)
from .base import Message, StructuredReply, Usage

__all__ = ["OpenAIProvider", "PerplexityProvider", "XAIProvider"]


class _ChatCompletionsProvider(SDKProvider):
    """A provider reached through ``AsyncOpenAI(...).chat.completions.create``."""

    sdk_modules = ("openai",)

    max_tokens_param: ClassVar[str] = "max_completion_tokens"
    inline_schema_refs: ClassVar[bool] = False  # for servers that do not follow "$ref"
    sends_openai_headers: ClassVar[bool] = False  # OpenAI-Organization / OpenAI-Project go to OpenAI only

    def _make_client(self, secret: str) -> Any:
        openai = require_sdk("openai", "openai")
        headers: dict[str, Any] = {}
        if not self.sends_openai_headers:
            # The SDK fills these from OPENAI_ORG_ID / OPENAI_PROJECT_ID (and Authorization from
            # OPENAI_CUSTOM_HEADERS); none of that belongs to another company's API.
            headers = {
                "Authorization": f"Bearer {secret}",
                "OpenAI-Organization": openai.Omit(),
                "OpenAI-Project": openai.Omit(),
            }
        return openai.AsyncOpenAI(
            api_key=secret,
            base_url=self.base_url,
            timeout=self.config.timeout,
            max_retries=0,  # the orchestrator owns the only retry loop
            default_headers=headers or None,
        )

    def _map_error(self, exc: BaseException, timeout: float, secret: str) -> ProviderError | None:
        openai = require_sdk("openai", "openai")
        if isinstance(exc, openai.APITimeoutError):
            return ProviderTimeout(self.name, f"no reply within {timeout:g} s", timeout=timeout)
        if isinstance(exc, openai.APIStatusError):
            return map_status_error(
                self.name,
                exc.status_code,
                _error_message(exc.body, exc.message),
                headers=exc.response.headers,
                secret=secret,
            )
        if isinstance(exc, openai.APIConnectionError):
            return ProviderUnavailable(
                self.name, f"connection failed: {redact(str(exc), secret)}", cause=connection_cause(exc)
            )
        if isinstance(exc, openai.APIResponseValidationError):
            return ProviderUnavailable(
                self.name,
                "the server's response did not follow the chat-completions format",
                cause="invalid response: not the chat-completions format",
            )
        if isinstance(exc, openai.OpenAIError):
            return ProviderError(self.name, f"{type(exc).__name__}: {redact(str(exc), secret)[:500]}")
        return None

    def _response_format(self, schema: type[BaseModel], schema_name: str) -> dict[str, Any]:
        json_schema = response_json_schema(schema)
        if self.inline_schema_refs:
            json_schema = inline_refs(json_schema)
        return {
            "type": "json_schema",
            "json_schema": {"name": safe_schema_name(schema_name), "schema": json_schema, "strict": False},
        }

    async def complete(
        self,
        *,
        system: str,
        messages: list[Message],
        schema: type[BaseModel],
        schema_name: str,
        timeout: float,
        max_output_tokens: int = 4096,
    ) -> StructuredReply:
        chat = [{"role": "system", "content": system}] + [{"role": m.role, "content": m.content} for m in messages]
        kwargs = {
            "model": self.model,
            "messages": chat,
            "response_format": self._response_format(schema, schema_name),
            self.max_tokens_param: max_output_tokens,
            "timeout": timeout,
        }

        async def call(client):
            return await client.chat.completions.create(**kwargs)

        completion = await self._call(call, timeout)
        return self._reply(completion)

    def _reply(self, completion: Any) -> StructuredReply:
        if not hasattr(completion, "choices"):
            raise ProviderUnavailable(
                self.name,
                "the server's response was not a chat completion",
                cause="invalid response: not a chat completion",
            )
        usage = self._usage(completion)
        if not completion.choices:
            raise _bad(self.name, "the reply had no choices", "", usage)
        choice = completion.choices[0]
        message = choice.message
        text = (message.content if message is not None else None) or ""
        refusal = getattr(message, "refusal", None)
        if refusal:
            raise _bad(self.name, f"the model refused: {refusal}", text or refusal, usage)
        if choice.finish_reason == "content_filter":
            raise _bad(self.name, "the reply was stopped by the provider's content filter", text, usage)
        try:
            data = parse_json_object(self.name, text, truncated=choice.finish_reason == "length")
        except BadOutput as exc:
            exc.usage = usage
            raise
        return StructuredReply(
            data=data, raw_text=text, model=completion.model or self.model, usage=usage, extras=self._extras(completion)
        )

    def _usage(self, completion: Any) -> Usage:
        usage = getattr(completion, "usage", None)
        if usage is None:
            return Usage()
        return Usage(
            input_tokens=int(usage.prompt_tokens or 0),
            output_tokens=int(usage.completion_tokens or 0),
            reported_cost_usd=self._reported_cost(usage),
        )

    def _reported_cost(self, usage: Any) -> float | None:
        return None

    def _extras(self, completion: Any) -> dict[str, Any]:
        return {}


class OpenAIProvider(_ChatCompletionsProvider):
    """OpenAI's chat completions with a JSON-schema response format."""

    name = "openai"
    key_env = PROVIDER_DEFAULTS["openai"]["key_env"]
    default_model = PROVIDER_DEFAULTS["openai"]["model"]
    default_base_url = PROVIDER_DEFAULTS["openai"]["base_url"]
    sends_openai_headers = True


class XAIProvider(_ChatCompletionsProvider):
    """xAI's Grok through its OpenAI-compatible API at its own base URL."""

    name = "xai"
    key_env = PROVIDER_DEFAULTS["xai"]["key_env"]
    default_model = PROVIDER_DEFAULTS["xai"]["model"]
    default_base_url = PROVIDER_DEFAULTS["xai"]["base_url"]


class PerplexityProvider(_ChatCompletionsProvider):
    """Perplexity's Sonar chat completions; its sources and its own cost figure are kept.

    Sources come as ``search_results`` (title, url, date, ...) in current
    responses and ``citations`` (URLs) in older ones; whichever are present are
    copied, untouched, into ``StructuredReply.extras``.
    """

    name = "perplexity"
    key_env = PROVIDER_DEFAULTS["perplexity"]["key_env"]
    default_model = PROVIDER_DEFAULTS["perplexity"]["model"]
    default_base_url = PROVIDER_DEFAULTS["perplexity"]["base_url"]
    max_tokens_param = "max_tokens"
    inline_schema_refs = True
    source_fields: ClassVar[tuple[str, ...]] = ("search_results", "citations")

    def _extras(self, completion: Any) -> dict[str, Any]:
        extra = _plain(getattr(completion, "model_extra", None) or {})
        return {key: extra[key] for key in self.source_fields if extra.get(key) is not None}

    def _reported_cost(self, usage: Any) -> float | None:
        extra = _plain(getattr(usage, "model_extra", None) or {})
        cost = extra.get("cost", extra.get("total_cost"))
        if isinstance(cost, dict):
            total = cost.get("total_cost")
            if total is None:
                parts = [v for k, v in cost.items() if k.endswith("_cost") and isinstance(v, (int, float))]
                total = sum(parts) if parts else None
            cost = total
        if isinstance(cost, (int, float)) and not isinstance(cost, bool):
            return float(cost)
        return None


def _plain(value: Any) -> Any:
    """Plain JSON data (dicts, lists, scalars) from whatever the SDK kept for an unknown field."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _error_message(body: Any, fallback: str) -> str:
    """The human-readable part of an error body (``{"error": {"message": ...}}`` and its variants)."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        return json.dumps(body)[:500]
    if isinstance(body, str) and body.strip():
        return body
    return fallback


def _bad(provider: str, message: str, raw: str, usage: Usage) -> BadOutput:
    err = BadOutput(provider, message, raw=raw)
    err.usage = usage  # the tokens were spent even though the answer is unusable
    return err
