"""Admins and auditors must pass TOTP before anything else; a one-time password must be replaced."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django_otp.plugins.otp_totp.models import TOTPDevice

# Paths a signed-in user may reach before MFA / password change are done.
_MFA_PATHS = ("/mfa/", "/logout/", "/static/")
_PASSWORD_PATHS = ("/password/", "/logout/", "/static/")


class EnforceMfaMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        if user.is_authenticated:
            path = request.path
            if user.needs_mfa and not user.is_verified():  # type: ignore[union-attr]
                if not path.startswith(_MFA_PATHS):
                    has_device = TOTPDevice.objects.filter(user=user, confirmed=True).exists()
                    return redirect("console:mfa_verify" if has_device else "console:mfa_enrol")
            elif user.must_change_password and not path.startswith(_PASSWORD_PATHS):  # type: ignore[union-attr]
                return redirect("console:password_change")
        return self.get_response(request)
