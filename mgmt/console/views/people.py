"""Dashboard, departments, users. Views parse, check, call a service, render (10-30 lines each)."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from mgmt.accounts.access import ALL_ROLES, access_department, access_user, require_role
from mgmt.accounts.errors import AccountError
from mgmt.accounts.models import Department, Role, User
from mgmt.accounts.refusals import audit_refusal
from mgmt.accounts.services import (
    do_create_department,
    do_create_user,
    do_reset_password,
    do_set_active,
    do_update_department,
    do_update_user,
)
from mgmt.audit.models import AuditEvent

from ..forms import DepartmentForm, UserEditForm, UserForm, UserSearchForm

ADMINS = (Role.APPLIANCE_ADMIN, Role.DEPARTMENT_ADMIN)


def _failed(
    request: HttpRequest,
    template: str,
    context: dict[str, object],
    exc: AccountError,
    *,
    action: str,
    target: User | None = None,
) -> HttpResponse:
    audit_refusal(request, action, exc.code, target=target)
    return render(request, template, {**context, "error_code": exc.code, "error": exc.message}, status=400)


def _invalid(
    request: HttpRequest,
    template: str,
    context: dict[str, object],
    form: Form,
    *,
    action: str,
    target: User | None = None,
) -> HttpResponse:
    audit_refusal(request, action, "form.invalid", form=form, target=target)
    return render(
        request,
        template,
        {**context, "error_code": "form.invalid", "error": "Check the fields marked below."},
        status=400,
    )


@require_role(*ALL_ROLES)
def dashboard(request: HttpRequest) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    since = timezone.now() - timezone.timedelta(days=1)
    context = {
        "departments": Department.objects.count(),
        "users": User.objects.filter(is_active=True).count(),
        "events_24h": AuditEvent.objects.filter(ts__gte=since).count(),
        "failed_logins_24h": AuditEvent.objects.filter(ts__gte=since, action="auth.login_failed").count(),
        "my_keys": user.api_keys.filter(revoked_at__isnull=True).count(),
    }
    return render(request, "console/dashboard.html", context)


@require_role(Role.APPLIANCE_ADMIN)
@require_http_methods(["GET", "POST"])
def departments(request: HttpRequest) -> HttpResponse:
    form = DepartmentForm(request.POST or None)
    listing = Department.objects.annotate(member_count=Count("members"))
    context = {"form": form, "departments": listing}
    if request.method == "POST":
        if not form.is_valid():
            return _invalid(request, "console/departments.html", context, form, action="department.create")
        try:
            department = do_create_department(
                form.cleaned_data["name"],
                weight=form.cleaned_data["weight"],
                actor=request.user,
                request=request,
            )  # type: ignore[arg-type]
        except AccountError as exc:
            return _failed(request, "console/departments.html", context, exc, action="department.create")
        return redirect(f"/departments/?created={department.pk}")
    return render(request, "console/departments.html", context)


@require_role(Role.APPLIANCE_ADMIN, Role.DEPARTMENT_ADMIN)
@require_POST
def department_weight(request: HttpRequest, department_id: int) -> HttpResponse:
    department = access_department(request, department_id)
    form = DepartmentForm({"name": department.name, "weight": request.POST.get("weight", "")})
    if not form.is_valid():
        audit_refusal(request, "department.update", "form.invalid", form=form, target=department)
        return render(
            request,
            "console/error.html",
            {"error_code": "form.invalid", "error": "The weight must be a whole number from 1 to 1000."},
            status=400,
        )
    do_update_department(
        department,
        weight=form.cleaned_data["weight"],
        actor=request.user,  # type: ignore[arg-type]
        request=request,
    )
    return redirect("console:departments")


def _visible_users(user: User) -> QuerySet[User]:
    users = User.objects.select_related("department")
    if user.role == Role.DEPARTMENT_ADMIN:
        users = users.filter(department_id=user.department_id)
    return users


@require_role(*ADMINS)
@require_http_methods(["GET", "POST"])
def users(request: HttpRequest) -> HttpResponse:
    actor: User = request.user  # type: ignore[assignment]
    form = UserForm(request.POST or None)
    if actor.role == Role.DEPARTMENT_ADMIN:
        form.fields["department"].queryset = Department.objects.filter(pk=actor.department_id)  # type: ignore[attr-defined]
        form.fields["role"].choices = [(Role.STAFF, Role.STAFF.label)]  # type: ignore[attr-defined]
    search = UserSearchForm(request.GET)
    query = search.cleaned_data["q"] if search.is_valid() else ""
    listing = _visible_users(actor).filter(Q(username__icontains=query) | Q(email__icontains=query))[:500]
    context = {"form": form, "users": listing, "q": query}
    if not search.is_valid():
        # The list as it is without a search, under the error: the admin still sees whom they can manage.
        error = "A search is up to 100 characters of plain text."
        if request.method == "POST":  # the new-user form posts to the page's address, search and all
            audit_refusal(request, "user.create", "form.invalid", form=search)
        return render(
            request, "console/users.html", {**context, "error_code": "form.invalid", "error": error}, status=400
        )
    if request.method == "POST":
        if not form.is_valid():
            return _invalid(request, "console/users.html", context, form, action="user.create")
        data = form.cleaned_data
        try:
            user, password = do_create_user(
                data["username"],
                role=data["role"],
                department=data["department"],
                email=data["email"],
                full_name=data["full_name"],
                actor=actor,
                request=request,
            )
        except AccountError as exc:
            return _failed(request, "console/users.html", context, exc, action="user.create")
        return render(request, "console/user_password.html", {"target": user, "password": password})
    return render(request, "console/users.html", context)


@require_role(*ADMINS)
@require_http_methods(["GET", "POST"])
def user_detail(request: HttpRequest, user_id: int) -> HttpResponse:
    target = access_user(request, user_id)
    actor: User = request.user  # type: ignore[assignment]
    initial = {"role": target.role, "department": target.department_id}
    form = UserEditForm(request.POST or None, initial=initial)
    context = {"form": form, "target": target, "keys": target.api_keys.all()}
    if request.method == "POST":
        if not form.is_valid():
            return _invalid(request, "console/user_detail.html", context, form, action="user.update", target=target)
        try:
            do_update_user(
                target,
                role=form.cleaned_data["role"],
                department=form.cleaned_data["department"],
                actor=actor,
                request=request,
            )
        except AccountError as exc:
            return _failed(request, "console/user_detail.html", context, exc, action="user.update", target=target)
        return redirect("console:user_detail", user_id=target.pk)
    return render(request, "console/user_detail.html", context)


@require_role(*ADMINS)
@require_POST
def user_active(request: HttpRequest, user_id: int) -> HttpResponse:
    target = access_user(request, user_id)
    active = request.POST.get("active") == "1"
    try:
        do_set_active(target, active=active, actor=request.user, request=request)  # type: ignore[arg-type]
    except AccountError as exc:
        context = {"target": target, "form": UserEditForm()}
        action = "user.activate" if active else "user.deactivate"
        return _failed(request, "console/user_detail.html", context, exc, action=action, target=target)
    return redirect("console:user_detail", user_id=target.pk)


@require_role(*ADMINS)
@require_POST
def user_reset_password(request: HttpRequest, user_id: int) -> HttpResponse:
    target = access_user(request, user_id)
    try:
        password = do_reset_password(target, actor=request.user, request=request)  # type: ignore[arg-type]
    except AccountError as exc:
        context = {"target": target, "form": UserEditForm()}
        return _failed(request, "console/user_detail.html", context, exc, action="user.password_reset", target=target)
    return render(request, "console/user_password.html", {"target": target, "password": password})
