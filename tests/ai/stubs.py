"""An in-process provider whose answers a test scripts: replies, errors, delays."""

from __future__ import annotations

import asyncio
import json

from forgeml.ai.providers.base import ProviderConfig, RemoteProvider, StructuredReply, Usage


class ScriptedProvider(RemoteProvider):
    """Each call takes the next scripted step: a dict (the JSON answer), an exception instance, or
    ``("sleep", seconds, step)``. When the script runs out, the last step repeats."""

    key_env = "STUB_API_KEY"
    default_model = "stub-model"

    def __init__(
        self, name: str, script: list, *, key: str | None = "stub-key", model: str = "stub-model", extras=None
    ):
        super().__init__(ProviderConfig(name=name, api_key=key, model=model, base_url="https://stub.example/v1"))
        self.name = name
        self.script = list(script)
        self.calls: list[dict] = []
        self.extras = extras or {}

    async def complete(self, *, system, messages, schema, schema_name, timeout, max_output_tokens=4096):
        self.calls.append(
            {"system": system, "messages": [(m.role, m.content) for m in messages], "schema": schema_name}
        )
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        while isinstance(step, tuple) and step[0] == "sleep":
            await asyncio.sleep(step[1])
            step = step[2]
        if isinstance(step, BaseException):
            raise step
        return StructuredReply(
            data=step, raw_text=json.dumps(step), model=self.model, usage=Usage(1000, 500), extras=dict(self.extras)
        )
