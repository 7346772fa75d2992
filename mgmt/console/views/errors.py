"""Error pages: a message for people and the stable code, never a stack trace."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from mgmt.accounts.access import public


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return render(
        request,
        "console/error.html",
        {
            "error_code": "csrf.failed",
            "error": "The form expired or did not come from this console. Reload the page and try again.",
        },
        status=403,
    )


def forbidden(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(
        request,
        "console/error.html",
        {
            "error_code": getattr(exception, "code", "access.denied"),
            "error": getattr(exception, "message", "You are not allowed to do that."),
        },
        status=403,
    )


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(
        request,
        "console/error.html",
        {
            "error_code": "not_found",
            "error": "There is no such page on this console.",
        },
        status=404,
    )


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(
        request,
        "console/error.html",
        {
            "error_code": "bad_request",
            "error": "The request was malformed or too large.",
        },
        status=400,
    )


@public
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok\n", content_type="text/plain")
