"""Console forms: every field bounded and validated; errors are shown next to the field."""

from __future__ import annotations

from django import forms

from mgmt.accounts.models import Department, Role

_DATE = forms.DateInput(attrs={"type": "date"})


# Passwords are taken exactly as typed (strip=False, as Django's own forms do): a space at either end is part
# of the password. Trimmed, the real password plus a space signed in, and a directory password that ends in a
# space could never sign in.
class LoginForm(forms.Form):
    username = forms.CharField(max_length=150, widget=forms.TextInput(attrs={"autocomplete": "username"}))
    password = forms.CharField(
        max_length=256, strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )


class TokenForm(forms.Form):
    token = forms.RegexField(
        regex=r"^\d{6}$",
        max_length=6,
        error_messages={"invalid": "Enter the 6-digit code from your authenticator app."},
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )


class PasswordChangeForm(forms.Form):
    old_password = forms.CharField(max_length=256, strip=False, widget=forms.PasswordInput)
    new_password = forms.CharField(max_length=256, min_length=12, strip=False, widget=forms.PasswordInput)
    new_password_again = forms.CharField(max_length=256, strip=False, widget=forms.PasswordInput)

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        if data.get("new_password") and data.get("new_password") != data.get("new_password_again"):
            self.add_error("new_password_again", "The two new passwords differ.")
        return data


class DepartmentForm(forms.Form):
    name = forms.CharField(max_length=100)
    weight = forms.IntegerField(min_value=1, max_value=1000, initial=1, help_text="Share of engine capacity when busy")


class UserForm(forms.Form):
    username = forms.RegexField(
        regex=r"^[\w.@+-]+$",
        max_length=150,
        error_messages={"invalid": "Letters, digits and . @ + - _ only."},
    )
    full_name = forms.CharField(max_length=150, required=False)
    email = forms.EmailField(max_length=254, required=False)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.STAFF)  # the least privilege, not the first
    department = forms.ModelChoiceField(queryset=Department.objects.all(), required=False)


class UserSearchForm(forms.Form):
    q = forms.CharField(max_length=100, required=False)


class UserEditForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)
    department = forms.ModelChoiceField(queryset=Department.objects.all(), required=False)


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Where the key is used, e.g. “dictation tool”")
    expires_on = forms.DateField(required=False, widget=_DATE, help_text="Leave empty for no expiry")


class AuditFilterForm(forms.Form):
    actor = forms.CharField(max_length=150, required=False)
    department = forms.CharField(max_length=100, required=False)
    # Actions are dotted names (auth.login); a trailing * asks for a prefix (auth.*).
    action = forms.RegexField(
        regex=r"^[A-Za-z0-9_.-]*\*?$",
        max_length=64,
        required=False,
        error_messages={"invalid": "An action is letters, digits and . _ - only, optionally ending in * (auth.*)."},
    )
    outcome = forms.ChoiceField(
        choices=[("", "any"), ("ok", "ok"), ("denied", "denied"), ("error", "error")], required=False
    )
    since = forms.DateField(required=False, widget=_DATE)
    until = forms.DateField(required=False, widget=_DATE)
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
