"""Login, TOTP enrolment and verification, password change, logout."""

from __future__ import annotations

import base64
import io

import segno
from django.contrib.auth import authenticate, login, logout
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

from mgmt.accounts.access import ALL_ROLES, public, require_role
from mgmt.accounts.errors import AccountError
from mgmt.accounts.ldap import login_refusal
from mgmt.accounts.refusals import audit_refusal
from mgmt.accounts.services import do_change_password
from mgmt.audit.services import record_event

from ..forms import LoginForm, PasswordChangeForm, TokenForm


def _error(
    request: HttpRequest,
    template: str,
    context: dict[str, object],
    code: str,
    message: str,
    status: int = 400,
) -> HttpResponse:
    return render(request, template, {**context, "error_code": code, "error": message}, status=status)


@public
@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("console:dashboard")
    form = LoginForm(request.POST or None)
    if request.method == "POST":
        if not form.is_valid():
            return _error(
                request,
                "console/login.html",
                {"form": form},
                "auth.malformed",
                "Enter a username and a password.",
            )
        user = authenticate(request, username=form.cleaned_data["username"], password=form.cleaned_data["password"])
        if getattr(request, "axes_locked_out", False):
            return lockout_page(request)
        if user is None:
            refusal = login_refusal(request)
            if refusal is not None:
                return _error(
                    request, "console/login.html", {"form": form}, refusal.code, refusal.message, status=refusal.status
                )
            return _error(
                request,
                "console/login.html",
                {"form": form},
                "auth.bad_credentials",
                "Wrong username or password.",
                status=401,
            )
        login(request, user)
        # require_role sends a path: anything else (redirect() would look up "abc" as a view name) goes home.
        next_url = request.GET.get("next", "")
        if next_url.startswith("/") and url_has_allowed_host_and_scheme(
            next_url, {request.get_host()}, require_https=request.is_secure()
        ):
            return redirect(next_url)
        return redirect("console:dashboard")
    return render(request, "console/login.html", {"form": form})


def lockout_page(request: HttpRequest, *_: object) -> HttpResponse:
    """django-axes' AXES_LOCKOUT_CALLABLE (called with the original response and credentials too)."""
    return render(
        request,
        "console/login.html",
        {
            "form": LoginForm(),
            "error_code": "auth.locked",
            "error": "Too many failed attempts: this account is locked for 15 minutes. "
            "An appliance admin can unlock it sooner.",
        },
        status=429,
    )


@public
@require_http_methods(["POST"])
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("console:login")


def _pending_device(request: HttpRequest) -> TOTPDevice:
    device = TOTPDevice.objects.filter(user=request.user, confirmed=False).order_by("-id").first()
    if device is None:
        device = TOTPDevice.objects.create(user=request.user, name="authenticator", confirmed=False)
    return device


def _qr_data_uri(url: str) -> str:
    # A standalone SVG document: svg_inline() leaves out the SVG namespace, and an <img> then shows nothing.
    buffer = io.BytesIO()
    segno.make(url, error="m").save(buffer, kind="svg", scale=4, xmldecl=False)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


@require_role(*ALL_ROLES)
@require_http_methods(["GET", "POST"])
def mfa_enrol(request: HttpRequest) -> HttpResponse:
    if TOTPDevice.objects.filter(user=request.user, confirmed=True).exists():
        return redirect("console:mfa_verify")
    device = _pending_device(request)
    secret = base64.b32encode(device.bin_key).decode().rstrip("=")
    context = {
        "form": TokenForm(request.POST or None),
        "secret": secret,
        "qr": _qr_data_uri(device.config_url),
    }
    if request.method == "POST":
        form = context["form"]
        assert isinstance(form, TokenForm)
        if not device.verify_is_allowed()[0]:
            return _error(
                request,
                "console/mfa_enrol.html",
                context,
                "mfa.throttled",
                "Too many wrong codes: wait a minute before the next try.",
                status=429,
            )
        if not form.is_valid() or not device.verify_token(form.cleaned_data["token"]):
            with transaction.atomic():
                record_event("mfa.enrol_failed", actor=request.user, outcome="denied", request=request)
            return _error(
                request,
                "console/mfa_enrol.html",
                context,
                "mfa.bad_code",
                "That code is wrong or already used. Check the clock of your phone and try the next code.",
            )
        with transaction.atomic():
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            TOTPDevice.objects.filter(user=request.user, confirmed=False).delete()
            record_event("mfa.enrol", actor=request.user, target_type="totp", target_id=device.pk, request=request)
        otp_login(request, device)
        return redirect("console:dashboard")
    return render(request, "console/mfa_enrol.html", context)


def _mfa_failed(request: HttpRequest, reason: str, *, device: TOTPDevice | None = None) -> None:
    """One `mfa.failed` event per refused code; with `device`, the failure also counts towards its throttle."""
    with transaction.atomic():
        if device is not None:
            device.throttle_increment()
        record_event("mfa.failed", actor=request.user, outcome="denied", data={"reason": reason}, request=request)


@require_role(*ALL_ROLES)
@require_http_methods(["GET", "POST"])
def mfa_verify(request: HttpRequest) -> HttpResponse:
    device = TOTPDevice.objects.filter(user=request.user, confirmed=True).first()
    if device is None:
        return redirect("console:mfa_enrol")
    form = TokenForm(request.POST or None)
    if request.method == "POST":
        if not device.verify_is_allowed()[0]:
            _mfa_failed(request, "throttled")
            return _error(
                request,
                "console/mfa_verify.html",
                {"form": form},
                "mfa.throttled",
                "Too many wrong codes: wait a minute before the next try.",
                status=429,
            )
        if not form.is_valid():
            # A failed attempt like a wrong code: audited, and counted by the throttle (verify_token counts those).
            _mfa_failed(request, "malformed", device=device)
            return _error(
                request,
                "console/mfa_verify.html",
                {"form": form},
                "mfa.malformed",
                "Enter the 6-digit code from your authenticator app.",
            )
        if not device.verify_token(form.cleaned_data["token"]):
            _mfa_failed(request, "bad_code")
            return _error(
                request,
                "console/mfa_verify.html",
                {"form": form},
                "mfa.bad_code",
                "That code is wrong or was already used. Wait for the next code.",
                status=401,
            )
        otp_login(request, device)
        with transaction.atomic():
            record_event("mfa.verified", actor=request.user, request=request)
        return redirect("console:dashboard")
    return render(request, "console/mfa_verify.html", {"form": form})


@require_role(*ALL_ROLES)
@require_http_methods(["GET", "POST"])
def password_change(request: HttpRequest) -> HttpResponse:
    form = PasswordChangeForm(request.POST or None)
    if request.method == "POST":
        if not form.is_valid():
            audit_refusal(request, "user.password_change", "form.invalid", form=form)
            return _error(
                request,
                "console/password_change.html",
                {"form": form},
                "form.invalid",
                "Check the fields marked below.",
            )
        try:
            do_change_password(
                request.user,
                old=form.cleaned_data["old_password"],  # type: ignore[arg-type]
                new=form.cleaned_data["new_password"],
                request=request,
            )
        except AccountError as exc:
            if exc.code != "auth.bad_password":  # do_change_password audits a wrong current password itself
                audit_refusal(request, "user.password_change", exc.code)
            return _error(request, "console/password_change.html", {"form": form}, exc.code, exc.message)
        from django.contrib.auth import update_session_auth_hash

        update_session_auth_hash(request, request.user)  # type: ignore[arg-type]
        return redirect("console:dashboard")
    return render(request, "console/password_change.html", {"form": form})
