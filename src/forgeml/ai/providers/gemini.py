"""Google's Gemini through the ``google-genai`` SDK: native ``generateContent`` with a JSON response schema.

The schema goes in ``response_json_schema`` (plain JSON Schema, which handles
pydantic's ``$defs``/``anyOf``/``dict`` output far better than the OpenAPI
subset of ``response_schema``), cut down to the keywords the API documents;
the rest moves into descriptions. The SDK's own retries are switched off
(``HttpRetryOptions(attempts=1)``), and its API version is pinned to
``v1beta``, where JSON-schema output is documented.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from ..errors import BadOutput, ProviderError, ProviderUnavailable
from ..models import PROVIDER_DEFAULTS
from ._common import (
    GEMINI_SCHEMA_KEYS,
    SDKProvider,
    map_status_error,
    parse_json_object,
    redact,
    require_sdk,
    response_json_schema,
    sanitize_schema,
)
from .base import Message, StructuredReply, Usage

__all__ = ["GeminiProvider"]

API_VERSION = "v1beta"
_TRUNCATED = {"MAX_TOKENS"}
_BLOCKED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}


class GeminiProvider(SDKProvider):
    """Gemini through ``genai.Client(...).aio.models.generate_content``."""

    name = "gemini"
    sdk_modules = ("google.genai", "google.genai.types", "google.genai.errors")
    key_env = PROVIDER_DEFAULTS["gemini"]["key_env"]
    default_model = PROVIDER_DEFAULTS["gemini"]["model"]
    default_base_url = PROVIDER_DEFAULTS["gemini"]["base_url"]

    def _make_client(self, secret: str) -> Any:
        genai = require_sdk("google.genai", "google-genai")
        types = require_sdk("google.genai.types", "google-genai")
        return genai.Client(
            vertexai=False,  # the Gemini Developer API, whatever GOOGLE_GENAI_USE_VERTEXAI says
            api_key=secret,
            http_options=types.HttpOptions(
                base_url=self.base_url,
                api_version=API_VERSION,
                timeout=_millis(self.config.timeout),
                retry_options=types.HttpRetryOptions(attempts=1),  # the orchestrator owns the only retry loop
            ),
        )

    async def _close_client(self, client: Any) -> None:
        await client.aio.aclose()

    def _map_error(self, exc: BaseException, timeout: float, secret: str) -> ProviderError | None:
        errors = require_sdk("google.genai.errors", "google-genai")
        if isinstance(exc, errors.APIError):
            response = getattr(exc, "response", None)
            headers = getattr(response, "headers", None)
            status = int(exc.code) if isinstance(exc.code, int) else 0
            message = exc.message or exc.status or str(exc.details)
            if not status:
                return ProviderUnavailable(
                    self.name, f"API error: {redact(str(message), secret)[:500]}", cause="API error without a status"
                )
            return map_status_error(self.name, status, str(message), headers=headers, secret=secret)
        if isinstance(exc, (errors.UnknownApiResponseError, json.JSONDecodeError)):
            return ProviderUnavailable(
                self.name,
                "the server's response did not follow the generateContent format",
                cause="invalid response: not the generateContent format",
            )
        return None  # httpx timeouts and connection errors are mapped by the shared code

    @staticmethod
    def output_schema(schema: type[BaseModel]) -> dict[str, Any]:
        """The ``response_json_schema`` sent for a response model."""
        return sanitize_schema(response_json_schema(schema), GEMINI_SCHEMA_KEYS)

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
        types = require_sdk("google.genai.types", "google-genai")
        contents = [
            types.Content(role="model" if m.role == "assistant" else "user", parts=[types.Part(text=m.content)])
            for m in messages
        ]
        config = types.GenerateContentConfig(
            system_instruction=system,
            response_mime_type="application/json",
            response_json_schema=self.output_schema(schema),
            max_output_tokens=max_output_tokens,
            http_options=types.HttpOptions(timeout=_millis(timeout)),
        )

        async def call(client):
            return await client.aio.models.generate_content(model=self.model, contents=contents, config=config)

        response = await self._call(call, timeout)
        usage = _usage(response)
        try:
            text, finish = self._text(response)
            data = parse_json_object(self.name, text, truncated=finish in _TRUNCATED)
        except BadOutput as exc:
            exc.usage = usage  # the tokens were spent even though the answer is unusable
            raise
        return StructuredReply(
            data=data, raw_text=text, model=getattr(response, "model_version", None) or self.model, usage=usage
        )

    def _text(self, response: Any) -> tuple[str, str]:
        """The reply's text (thought parts left out) and its finish reason; BadOutput when it was blocked."""
        candidates = getattr(response, "candidates", None) or []
        if not candidates:
            feedback = getattr(response, "prompt_feedback", None)
            reason = getattr(feedback, "block_reason", None)
            why = f"the prompt was blocked ({_enum_name(reason)})" if reason else "the reply had no candidates"
            raise BadOutput(self.name, why, raw="", cause="invalid response: no answer")
        candidate = candidates[0]
        finish = _enum_name(getattr(candidate, "finish_reason", None))
        parts = getattr(getattr(candidate, "content", None), "parts", None) or []
        text = "".join(
            part.text for part in parts if getattr(part, "text", None) and not getattr(part, "thought", False)
        )
        if finish in _BLOCKED:
            raise BadOutput(
                self.name,
                f"the reply was stopped by the provider ({finish})",
                raw=text,
                cause="invalid response: stopped by the provider",
            )
        return text, finish


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _enum_name(value: Any) -> str:
    if value is None:
        return ""
    return str(getattr(value, "name", None) or getattr(value, "value", None) or value)


def _usage(response: Any) -> Usage:
    meta = getattr(response, "usage_metadata", None)
    if meta is None:
        return Usage()
    # thinking tokens are billed as output but are not part of candidates_token_count
    output = int(getattr(meta, "candidates_token_count", 0) or 0) + int(getattr(meta, "thoughts_token_count", 0) or 0)
    return Usage(input_tokens=int(getattr(meta, "prompt_token_count", 0) or 0), output_tokens=output)
