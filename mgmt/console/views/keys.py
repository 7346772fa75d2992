"""Personal API keys: shown once at creation, stored hashed, revocable, optional expiry."""

from __future__ import annotations

from datetime import date, datetime, time

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from mgmt.accounts.access import ALL_ROLES, access_api_key, access_user, require_role
from mgmt.accounts.errors import AccountError
from mgmt.accounts.models import ApiKey, Role, User
from mgmt.accounts.refusals import audit_refusal
from mgmt.accounts.services import do_create_api_key, do_revoke_api_key

from ..forms import ApiKeyForm


def _end_of_day(day: date | None) -> datetime | None:
    return timezone.make_aware(datetime.combine(day, time.max)) if day is not None else None


def _visible_keys(user: User) -> QuerySet[ApiKey]:
    keys = ApiKey.objects.select_related("user", "department")
    if user.role == Role.APPLIANCE_ADMIN:
        return keys
    if user.role == Role.DEPARTMENT_ADMIN:
        return keys.filter(department_id=user.department_id)
    return keys.filter(user=user)


@require_role(*ALL_ROLES)
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    form = ApiKeyForm(request.POST or None)
    context = {"form": form, "keys": _visible_keys(user)[:500]}
    if request.method == "POST":
        if not form.is_valid():
            audit_refusal(request, "apikey.create", "form.invalid", form=form)
            return render(
                request,
                "console/keys.html",
                {**context, "error_code": "form.invalid", "error": "Check the fields marked below."},
                status=400,
            )
        expires_on = form.cleaned_data["expires_on"]
        expires_at = timezone.make_aware(datetime.combine(expires_on, time.max)) if expires_on is not None else None
        try:
            issued = do_create_api_key(
                user, name=form.cleaned_data["name"], expires_at=expires_at, actor=user, request=request
            )
        except AccountError as exc:
            audit_refusal(request, "apikey.create", exc.code)
            return render(
                request,
                "console/keys.html",
                {**context, "error_code": exc.code, "error": exc.message},
                status=400,
            )
        return render(request, "console/key_created.html", {"issued": issued})
    return render(request, "console/keys.html", context)


@require_role(*ALL_ROLES)
@require_POST
def api_key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    key = access_api_key(request, key_id)
    try:
        do_revoke_api_key(key, actor=request.user, request=request)  # type: ignore[arg-type]
    except AccountError as exc:
        audit_refusal(request, "apikey.revoke", exc.code, target=key)
        return render(request, "console/error.html", {"error_code": exc.code, "error": exc.message}, status=400)
    return redirect("console:api_keys")


@require_role(Role.APPLIANCE_ADMIN, Role.DEPARTMENT_ADMIN)
@require_POST
def user_key_create(request: HttpRequest, user_id: int) -> HttpResponse:
    """An admin issues a key for someone else (bound to that person and their department), shown once."""
    target = access_user(request, user_id)
    form = ApiKeyForm(request.POST)
    if not form.is_valid():
        audit_refusal(request, "apikey.create", "form.invalid", form=form, target=target)
        return render(
            request,
            "console/error.html",
            {
                "error_code": "form.invalid",
                "error": "Give the key a name (and, if you want one, an expiry date in the future).",
            },
            status=400,
        )
    try:
        issued = do_create_api_key(
            target,
            name=form.cleaned_data["name"],
            expires_at=_end_of_day(form.cleaned_data["expires_on"]),
            actor=request.user,
            request=request,
        )  # type: ignore[arg-type]
    except AccountError as exc:
        audit_refusal(request, "apikey.create", exc.code, target=target)
        return render(request, "console/error.html", {"error_code": exc.code, "error": exc.message}, status=400)
    return render(request, "console/key_created.html", {"issued": issued})
