from django.urls import path

from .views import audit, auth, errors, keys, people, updates

app_name = "console"
urlpatterns = [
    path("login/", auth.login_view, name="login"),
    path("logout/", auth.logout_view, name="logout"),
    path("mfa/enrol/", auth.mfa_enrol, name="mfa_enrol"),
    path("mfa/verify/", auth.mfa_verify, name="mfa_verify"),
    path("password/", auth.password_change, name="password_change"),
    path("healthz", errors.healthz, name="healthz"),
    path("", people.dashboard, name="dashboard"),
    path("departments/", people.departments, name="departments"),
    path("departments/<int:department_id>/weight/", people.department_weight, name="department_weight"),
    path("users/", people.users, name="users"),
    path("users/<int:user_id>/", people.user_detail, name="user_detail"),
    path("users/<int:user_id>/active/", people.user_active, name="user_active"),
    path("users/<int:user_id>/reset-password/", people.user_reset_password, name="user_reset_password"),
    path("users/<int:user_id>/keys/", keys.user_key_create, name="user_key_create"),
    path("keys/", keys.api_keys, name="api_keys"),
    path("keys/<int:key_id>/revoke/", keys.api_key_revoke, name="api_key_revoke"),
    path("audit/", audit.audit_search, name="audit"),
    path("audit/verify/", audit.audit_verify, name="audit_verify"),
    path("updates/", updates.updates, name="updates"),
    path("updates/import/", updates.update_import, name="update_import"),
    path("updates/activate/", updates.update_activate, name="update_activate"),
    path("updates/rollback/", updates.update_rollback, name="update_rollback"),
    path("updates/progress/", updates.update_progress, name="update_progress"),
]
