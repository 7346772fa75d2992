"""The console's relay to the gateway: the user's session cookie plus `X-Enclave-Console: 1`, streamed.

The browser gets newline-delimited JSON: {"delta": text} as tokens arrive, then {"done": true} or
{"error": {"code", "message"}}. A refusal before the first byte is an HTTP error with {"error": ...} and
stores nothing; once the gateway accepts, the user's message is stored, and the answer when it ends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
from django.conf import settings

from .models import Conversation
from .services import ChatError, do_add_message

__all__ = ["open_stream", "relay"]

TIMEOUT = httpx.Timeout(connect=5.0, read=300.0, write=30.0, pool=5.0)


def _line(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("utf-8") + b"\n"


def open_stream(conversation: Conversation, text: str, session_key: str) -> tuple[httpx.Client, httpx.Response]:
    history = [{"role": m.role, "content": m.content} for m in conversation.messages.all()]
    body: dict[str, Any] = {
        "model": conversation.alias,
        "messages": [*history, {"role": "user", "content": text}],
        "stream": True,
    }
    if settings.CHAT_MAX_TOKENS:
        body["max_tokens"] = settings.CHAT_MAX_TOKENS
    client = httpx.Client(timeout=TIMEOUT)
    url = settings.ENCLAVE_GATEWAY_URL.rstrip("/") + "/v1/chat/completions"
    headers = {"X-Enclave-Console": "1", "Cookie": f"{settings.SESSION_COOKIE_NAME}={session_key}"}
    try:
        response = client.send(client.build_request("POST", url, json=body, headers=headers), stream=True)
    except httpx.HTTPError as exc:
        client.close()
        raise ChatError("chat.gateway_unavailable", "The inference gateway cannot be reached; try again.", 502) from exc
    if response.status_code != 200:
        try:
            error = json.loads(response.read())["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError, httpx.HTTPError):
            code, message = "chat.gateway_error", f"The gateway answered {response.status_code}."
        finally:
            response.close()
            client.close()
        raise ChatError(code, message, response.status_code)
    return client, response


def relay(conversation: Conversation, text: str, client: httpx.Client, response: httpx.Response) -> Iterator[bytes]:
    do_add_message(conversation, "user", text)
    parts: list[str] = []
    finished = False
    try:
        for raw in response.iter_lines():
            if not raw.startswith("data:"):
                continue
            data = raw[5:].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            if "error" in event:
                yield _line({"error": {"code": event["error"].get("code"), "message": event["error"].get("message")}})
                return
            delta = (event.get("choices") or [{}])[0].get("delta", {}).get("content") or ""
            if delta:
                parts.append(delta)
                yield _line({"delta": delta})
        finished = True
        yield _line({"done": True})
    except (httpx.HTTPError, ValueError):
        yield _line({"error": {"code": "chat.gateway_unavailable", "message": "The answer was cut off."}})
    finally:
        response.close()
        client.close()
        if parts or finished:
            do_add_message(conversation, "assistant", "".join(parts))
