"""/chat/: a signed-in user's conversations with the aliases their department has routes for."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from mgmt.accounts.access import ALL_ROLES, require_role
from mgmt.accounts.models import User

from .models import Conversation
from .relay import open_stream, relay
from .services import (
    ChatError,
    allowed_aliases,
    check_alias,
    check_message,
    do_create_conversation,
    do_delete_conversation,
)


def _page(request: HttpRequest, user: User, current: Conversation | None = None, **extra: object) -> HttpResponse:
    context = {
        "conversations": Conversation.objects.filter(user=user)[:200],
        "aliases": allowed_aliases(user),
        "current": current,
        "chat_messages": current.messages.all() if current else [],
        **extra,
    }
    return render(request, "chat/chat.html", context, status=400 if "error_code" in extra else 200)


def _own(request: HttpRequest, conversation_id: int) -> Conversation:
    return get_object_or_404(Conversation, pk=conversation_id, user=request.user)


@require_role(*ALL_ROLES)
@require_http_methods(["GET", "POST"])
def chat_home(request: HttpRequest) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    if user.department_id is None:
        return _page(request, user, error_code="chat.no_department", error="Chat needs a department; you have none.")
    if request.method == "POST":
        try:
            conversation = do_create_conversation(user, request.POST.get("alias", ""), request=request)
        except ChatError as exc:
            return _page(request, user, error_code=exc.code, error=exc.message)
        return redirect("chat:conversation", conversation.pk)
    return _page(request, user)


@require_role(*ALL_ROLES)
@require_http_methods(["GET"])
def conversation(request: HttpRequest, conversation_id: int) -> HttpResponse:
    return _page(request, request.user, _own(request, conversation_id))  # type: ignore[arg-type]


@require_role(*ALL_ROLES)
@require_POST
def conversation_send(request: HttpRequest, conversation_id: int) -> HttpResponse:
    current = _own(request, conversation_id)
    text = request.POST.get("text", "")
    try:
        check_message(text)
        check_alias(request.user, current.alias)  # type: ignore[arg-type]
        client, response = open_stream(current, text, request.session.session_key or "")
    except ChatError as exc:
        return JsonResponse({"error": {"code": exc.code, "message": exc.message}}, status=exc.status)
    stream = StreamingHttpResponse(relay(current, text, client, response), content_type="application/x-ndjson")
    stream["Cache-Control"] = "no-store"
    stream["X-Accel-Buffering"] = "no"
    return stream


@require_role(*ALL_ROLES)
@require_POST
def conversation_delete(request: HttpRequest, conversation_id: int) -> HttpResponse:
    do_delete_conversation(_own(request, conversation_id), actor=request.user, request=request)  # type: ignore[arg-type]
    return redirect("chat:home")
