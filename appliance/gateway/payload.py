"""Checking a client's JSON body and rewriting it for the chosen deployment (model name, thinking mode)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .errors import GatewayError
from .snapshot import Deployment, Route

__all__ = [
    "THINKING_MAX_MIN_CONTEXT",
    "Endpoint",
    "ParsedRequest",
    "check_deployment",
    "parse_request",
    "upstream_body",
]

THINKING_MAX_MIN_CONTEXT = 393216


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str
    task: str
    input_field: str
    # Anthropic's Messages API (engines that serve it: vLLM, ds4, llama.cpp); OpenAI's otherwise.
    anthropic: bool = False


ENDPOINTS = {
    "/v1/chat/completions": Endpoint("/v1/chat/completions", "chat", "messages"),
    "/v1/completions": Endpoint("/v1/completions", "chat", "prompt"),
    "/v1/embeddings": Endpoint("/v1/embeddings", "embedding", "input"),
    "/v1/messages": Endpoint("/v1/messages", "chat", "messages", anthropic=True),
}

_EFFORT = {"none": "off", "off": "off", "minimal": "high", "low": "high", "medium": "high", "high": "high"}
_EFFORT["max"] = "max"


@dataclass(slots=True)
class ParsedRequest:
    body: dict[str, Any]
    alias: str
    stream: bool
    wants_usage: bool
    max_tokens: int | None
    effort: str | None


def _bad_type(param: str, expected: str) -> GatewayError:
    return GatewayError(400, "invalid_type", f"“{param}” must be {expected}.", param=param)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: valid JSON syntax, but Python reads it as Infinity and would send that on
        raise ValueError(f"{text} is too large for a number")
    return value


# Strict JSON: Python's decoder also takes NaN and Infinity, which no engine's parser does.
_DECODER = json.JSONDecoder(parse_constant=_no_constants, parse_float=_finite_float)


def _lone_surrogate(body: dict[str, Any]) -> bool:
    """JSON can escape half of a UTF-16 pair ("\\ud800"), which is no character: it cannot be encoded
    for the engine, and PostgreSQL refuses it in the audit event. Only bodies with such an escape are
    checked (escaped pairs, such as emoji from clients that write ASCII only, are fine)."""
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def parse_request(raw: bytes, endpoint: Endpoint) -> ParsedRequest:
    try:
        body = _DECODER.decode(raw.decode("utf-8-sig"))  # a leading BOM is tolerated, as json.loads does
    except (ValueError, UnicodeDecodeError):
        raise GatewayError(400, "invalid_json", "The request body is not valid JSON.") from None
    except RecursionError:
        raise GatewayError(400, "invalid_json", "The request body nests arrays or objects too deeply.") from None
    if (b"\\ud" in raw or b"\\uD" in raw) and _lone_surrogate(body):
        raise GatewayError(
            400, "invalid_json", "The request body is not valid JSON: it escapes half of a Unicode surrogate pair."
        )
    if not isinstance(body, dict):
        raise GatewayError(400, "invalid_json", "The request body must be a JSON object.")
    alias = body.get("model")
    if alias is None:
        raise GatewayError(400, "missing_field", "“model” is required: name an alias such as “default”.", param="model")
    if not isinstance(alias, str):
        raise _bad_type("model", "a string")
    field = endpoint.input_field
    value = body.get(field)
    if value is None:
        raise GatewayError(400, "missing_field", f"“{field}” is required.", param=field)
    if field == "messages":
        if not isinstance(value, list) or not value:
            raise _bad_type("messages", "a non-empty array of messages")
        for index, message in enumerate(value):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise _bad_type(f"messages[{index}]", "an object with a string “role”")
            content = message.get("content")
            if content is not None and not isinstance(content, str | list):
                raise _bad_type(f"messages[{index}].content", "a string or an array of parts")
    elif not isinstance(value, str | list) or (isinstance(value, list) and not value):
        raise _bad_type(field, "a string or a non-empty array")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad_type("stream", "true or false")
    if stream and endpoint.task == "embedding":
        raise GatewayError(400, "invalid_type", "Embeddings cannot be streamed.", param="stream")
    max_tokens: int | None = None
    if endpoint.anthropic and body.get("max_tokens") is None:
        raise GatewayError(400, "missing_field", "“max_tokens” is required.", param="max_tokens")
    for name in ("max_tokens", "max_completion_tokens"):
        limit = body.get(name)
        if limit is not None:
            if not _is_int(limit) or limit < 1:
                raise _bad_type(name, "a whole number of 1 or more")
            max_tokens = limit
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad_type("stream_options", "an object")
    wants_usage = bool(options and options.get("include_usage"))
    effort = body.get("reasoning_effort")
    if effort is not None and (not isinstance(effort, str) or effort not in _EFFORT):
        raise GatewayError(
            400,
            "invalid_reasoning_effort",
            "“reasoning_effort” must be one of none, low, medium, high, max.",
            param="reasoning_effort",
        )
    kwargs = body.get("chat_template_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise _bad_type("chat_template_kwargs", "an object")
    return ParsedRequest(body, alias, stream, wants_usage, max_tokens, effort)


def thinking_mode(request: ParsedRequest, route: Route) -> str:
    return _EFFORT[request.effort] if request.effort is not None else route.thinking


def check_deployment(request: ParsedRequest, route: Route, deployment: Deployment, endpoint: Endpoint) -> None:
    """Refuse what `deployment` cannot take, before the request waits in its queue."""
    if request.max_tokens is not None and request.max_tokens > deployment.max_context:
        raise GatewayError(
            400,
            "context_length_exceeded",
            f"max_tokens {request.max_tokens} is more than this model's context of {deployment.max_context}"
            " tokens; ask for fewer.",
            param="max_tokens",
        )
    if (
        not endpoint.anthropic
        and endpoint.task == "chat"
        and thinking_mode(request, route) == "max"
        and deployment.max_context < THINKING_MAX_MIN_CONTEXT
    ):
        raise GatewayError(
            400,
            "thinking_max_unavailable",
            f"Thinking “max” needs a context of {THINKING_MAX_MIN_CONTEXT} tokens; this alias has "
            f"{deployment.max_context}. Use reasoning_effort “high”.",
            param="reasoning_effort",
        )


def upstream_body(
    request: ParsedRequest, route: Route, deployment: Deployment, endpoint: Endpoint, priority: int | None = None
) -> bytes:
    """The body sent to `deployment` (which check_deployment has accepted): its served model name, thinking
    mapped, usage asked for, and the gateway's priority for engines that schedule by one (a client's own
    "priority" never reaches an engine)."""
    body = dict(request.body)
    body["model"] = deployment.served_name
    body.pop("reasoning_effort", None)
    body.pop("priority", None)
    if endpoint.anthropic:
        # Passed as the client wrote it (its own `thinking`; usage is always in Anthropic's stream).
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if priority is not None:
        body["priority"] = priority
    if endpoint.task == "chat":
        mode = thinking_mode(request, route)
        if mode != "off":
            body["chat_template_kwargs"] = {
                **(request.body.get("chat_template_kwargs") or {}),
                "thinking": True,
                "reasoning_effort": mode,
            }
        elif request.effort is not None:
            body["chat_template_kwargs"] = {
                **(request.body.get("chat_template_kwargs") or {}),
                "thinking": False,
            }
    if request.stream:
        body["stream_options"] = {**(request.body.get("stream_options") or {}), "include_usage": True}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
