"""Anthropic's Messages API through the ``anthropic`` SDK, with its native JSON-schema output format.

The schema goes in ``output_config={"format": {"type": "json_schema", ...}}``
(constrained decoding; the SDK's ``transform_schema`` moves the keywords the
API does not take, such as numeric bounds, into descriptions). The API needs
every object closed (``additionalProperties: false``), so free-form ``dict``
fields are asked for as JSON strings and decoded back before the reply is
returned. Recent models reject forced tool use, which is why the native format
is used rather than a tool whose input schema is the response model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ..errors import BadOutput, ProviderError, ProviderTimeout, ProviderUnavailable, connection_cause
from ..models import PROVIDER_DEFAULTS
from ._common import (
    SDKProvider,
    decode_free_form_objects,
    encode_free_form_objects,
    map_status_error,
    parse_json_object,
    redact,
    require_sdk,
    response_json_schema,
)
from .base import Message, StructuredReply, Usage

__all__ = ["AnthropicProvider"]


class AnthropicProvider(SDKProvider):
    """Claude through ``AsyncAnthropic().messages.create`` with ``output_config.format``."""

    name = "anthropic"
    sdk_modules = ("anthropic",)
    key_env = PROVIDER_DEFAULTS["anthropic"]["key_env"]
    default_model = PROVIDER_DEFAULTS["anthropic"]["model"]
    default_base_url = PROVIDER_DEFAULTS["anthropic"]["base_url"]

    def _make_client(self, secret: str) -> Any:
        anthropic = require_sdk("anthropic", "anthropic")
        return anthropic.AsyncAnthropic(
            api_key=secret,
            base_url=self.base_url,
            timeout=self.config.timeout,
            max_retries=0,  # the orchestrator owns the only retry loop
        )

    def _map_error(self, exc: BaseException, timeout: float, secret: str) -> ProviderError | None:
        anthropic = require_sdk("anthropic", "anthropic")
        if isinstance(exc, anthropic.APITimeoutError):
            return ProviderTimeout(self.name, f"no reply within {timeout:g} s", timeout=timeout)
        if isinstance(exc, anthropic.APIStatusError):
            message = getattr(exc, "api_message", None) or exc.message
            return map_status_error(self.name, exc.status_code, message, headers=exc.response.headers, secret=secret)
        if isinstance(exc, anthropic.APIConnectionError):
            return ProviderUnavailable(
                self.name, f"connection failed: {redact(str(exc), secret)}", cause=connection_cause(exc)
            )
        if isinstance(exc, anthropic.APIResponseValidationError):
            return ProviderUnavailable(
                self.name,
                "the server's response did not follow the Messages format",
                cause="invalid response: not the Messages format",
            )
        if isinstance(exc, anthropic.AnthropicError):
            return ProviderError(self.name, f"{type(exc).__name__}: {redact(str(exc), secret)[:500]}")
        return None

    @staticmethod
    def output_schema(schema: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(schema sent to the API, schema the reply is decoded with)`` for a response model."""
        anthropic = require_sdk("anthropic", "anthropic")
        original = response_json_schema(schema)
        return anthropic.transform_schema(encode_free_form_objects(original)), original

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
        sent_schema, original = self.output_schema(schema)
        kwargs = {
            "model": self.model,
            "max_tokens": max_output_tokens,
            "system": system,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "output_config": {"format": {"type": "json_schema", "schema": sent_schema}},
            "timeout": timeout,
        }

        async def call(client):
            return await client.messages.create(**kwargs)

        message = await self._call(call, timeout)
        if not hasattr(message, "content"):
            raise ProviderUnavailable(
                self.name,
                "the server's response was not a Messages reply",
                cause="invalid response: not a Messages reply",
            )
        usage = _usage(message)
        text = "".join(getattr(block, "text", "") for block in message.content or [] if block.type == "text")
        stop = message.stop_reason
        try:
            if stop == "refusal":
                raise BadOutput(self.name, "the model refused to answer", raw=text, cause="the model refused to answer")
            data = parse_json_object(self.name, text, truncated=stop in ("max_tokens", "model_context_window_exceeded"))
        except BadOutput as exc:
            exc.usage = usage  # the tokens were spent even though the answer is unusable
            raise
        return StructuredReply(
            data=decode_free_form_objects(data, original),
            raw_text=text,
            model=message.model or self.model,
            usage=usage,
        )


def _usage(message: Any) -> Usage:
    usage = getattr(message, "usage", None)
    if usage is None:
        return Usage()
    # cache writes and reads are input too (billed at their own rates; counted here at the input rate)
    cached = int(getattr(usage, "cache_creation_input_tokens", 0) or 0) + int(
        getattr(usage, "cache_read_input_tokens", 0) or 0
    )
    return Usage(input_tokens=int(usage.input_tokens or 0) + cached, output_tokens=int(usage.output_tokens or 0))
