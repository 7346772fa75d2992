"""Enclave console settings. Every value comes from the environment through mgmt.env helpers.

ENCLAVE_PRODUCTION=1 turns on the hardened settings (HTTPS-only cookies, HSTS, no DEBUG) and requires
ENCLAVE_SECRET_KEY (or ENCLAVE_SECRET_KEY_FILE). Without it the defaults suit development and tests.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from mgmt.env import env_bool, env_int, env_list, env_path, env_str, parse_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
PRODUCTION = env_bool("ENCLAVE_PRODUCTION", False)

# State that must survive restarts: keys, the SQLite demo database, staged bundles.
STATE_DIR = env_path("ENCLAVE_STATE_DIR", BASE_DIR / "var")
POLICY_DIR = env_path("ENCLAVE_POLICY_DIR", BASE_DIR / "policies")
AUDIT_KEY_PATH = env_path("ENCLAVE_AUDIT_KEY", STATE_DIR / "keys" / "audit-ed25519.pem")

if PRODUCTION:
    SECRET_KEY = env_str("ENCLAVE_SECRET_KEY")
else:
    SECRET_KEY = env_str("ENCLAVE_SECRET_KEY", "dev-only-insecure-key-do-not-use-in-production-0123456789")
DEBUG = env_bool("ENCLAVE_DEBUG", False)
ALLOWED_HOSTS = env_list("ENCLAVE_ALLOWED_HOSTS", [] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "django_htmx",
    "csp",
    "mgmt.accounts",
    "mgmt.audit",
    "mgmt.console",
    "mgmt.routing",
    "mgmt.updates",
    "mgmt.chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (CSS, htmx) straight from the application: nothing fetched from elsewhere, ever.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "mgmt.accounts.middleware.EnforceMfaMiddleware",
    # Last, so that it sees the result of authentication (django-axes' documented position).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "mgmt.urls"
WSGI_APPLICATION = "mgmt.wsgi.application"
AUTH_USER_MODEL = "accounts.User"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
            ],
        },
    },
]

_database = parse_database_url(env_str("DATABASE_URL", f"sqlite:///{(STATE_DIR / 'enclave.sqlite3').as_posix()}"))
if _database.engine.endswith("sqlite3") and _database.name != ":memory:":
    Path(_database.name).parent.mkdir(parents=True, exist_ok=True)
DATABASES = {"default": _database.as_django()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}

# Passwords: Argon2id first; the others only to verify (and upgrade) older hashes.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

AUTHENTICATION_BACKENDS = [
    # django-axes first: it refuses locked-out users before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "mgmt.accounts.ldap.EnclaveLDAPBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# Directory (LDAP / Active Directory): off unless ENCLAVE_LDAP_URI is set. See mgmt/accounts/ldap.py.
from mgmt.accounts.ldap_settings import *  # noqa: E402, F403

# Lockout (django-axes): 5 failures per user lock that user for 15 minutes, whatever the address.
AXES_FAILURE_LIMIT = env_int("ENCLAVE_LOCKOUT_FAILURES", 5, minimum=1)
AXES_COOLOFF_TIME = env_int("ENCLAVE_LOCKOUT_MINUTES", 15, minimum=1) / 60
# Locking by address too would lock out a whole ward behind one workstation or NAT: see
# docs/decisions/0003-lockout-by-username.md. Per-account locks protect the accounts.
AXES_LOCKOUT_PARAMETERS = ["username"]
# security.W021 (HSTS preload): the browser preload list is for public domains; an appliance on a hospital's
# internal name cannot be on it. HSTS itself is on in production.
SILENCED_SYSTEM_CHECKS = ["axes.W006", "security.W021"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "mgmt.console.views.auth.lockout_page"
AXES_USERNAME_FORM_FIELD = "username"
AXES_VERBOSE = False

OTP_TOTP_ISSUER = "Enclave"
LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "console:dashboard"

# Sessions and CSRF: cookies never reach scripts; HTTPS-only in production; short idle sessions.
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("ENCLAVE_SESSION_SECONDS", 8 * 3600, minimum=300)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Strict"
CSRF_FAILURE_VIEW = "mgmt.console.views.csrf_failure"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 200
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("ENCLAVE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = False
    CSRF_TRUSTED_ORIGINS = [f"https://{h}" for h in ALLOWED_HOSTS if h and not h.startswith(".")]

# Content Security Policy: everything from the appliance itself, nothing inline without a nonce.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    }
}

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env_str("ENCLAVE_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env_path("ENCLAVE_STATIC_ROOT", STATE_DIR / "static")
WHITENOISE_USE_FINDERS = True  # serve from the apps' static/ folders; `collectstatic` is optional
with contextlib.suppress(OSError):  # a read-only state dir: collectstatic's job on the appliance
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# Celery: Redis broker; tasks are acknowledged late and idempotent (CONVENTIONS.md point 4).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "enclave"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
AUDIT_SEAL_INTERVAL_SECONDS = env_int("ENCLAVE_AUDIT_SEAL_SECONDS", 10, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "audit-seal": {"task": "audit.seal", "schedule": float(AUDIT_SEAL_INTERVAL_SECONDS)},
    "audit-retention": {"task": "audit.retention", "schedule": 3600.0},
    "routing-probe": {"task": "routing.probe_deployments", "schedule": 10.0},
    "chat-retention": {"task": "chat.retention", "schedule": 3600.0},
}

# Staff chat (mgmt.chat): the console relays messages to the gateway with the user's session.
ENCLAVE_GATEWAY_URL = env_str("ENCLAVE_GATEWAY_URL", "http://127.0.0.1:8001")
# Cap on answer length sent as max_tokens; 0 leaves it to the engine.
CHAT_MAX_TOKENS = env_int("ENCLAVE_CHAT_MAX_TOKENS", 0, minimum=0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("ENCLAVE_LOG_LEVEL", "WARNING")},
}

# Events younger than this are left for the next sealer run (their transaction may still be open).
AUDIT_SEAL_GRACE_SECONDS = env_int("ENCLAVE_AUDIT_SEAL_GRACE_SECONDS", 2, minimum=0)

# Update bundles (appliance.bundles, mgmt.updates). The trust root ships in the image.
BUNDLE_TRUST_ROOT = env_path("ENCLAVE_BUNDLE_TRUST_ROOT", STATE_DIR / "bundle-trust-root.json")
HARDWARE_CLASS = env_str("ENCLAVE_HARDWARE_CLASS", "cpu-dev")
UPDATES_CHANNEL = env_str("ENCLAVE_CHANNEL", "stable")
# Development and tests: directories searched for ENCLAVE-* bundles. The appliance uses udev instead.
UPDATES_WATCH_DIRS = env_list("ENCLAVE_UPDATES_WATCH_DIRS", [] if PRODUCTION else [str(STATE_DIR / "media")])
UPDATES_USE_UDEV = env_bool("ENCLAVE_UPDATES_UDEV", PRODUCTION)
# Engines the health gate probes after an activation (base URLs, e.g. http://127.0.0.1:8001).
UPDATES_SMOKE_ENDPOINTS = env_list("ENCLAVE_UPDATES_SMOKE_ENDPOINTS", [])
UPDATES_HEALTH_TIMEOUT_SECONDS = env_int("ENCLAVE_UPDATES_HEALTH_TIMEOUT", 300, minimum=1)
# The activation's provisioning step (appliance.bundles.provision): the command that applies a bundle's
# debs/ offline (on the appliance: "/usr/local/sbin/enclave-apply-bundle request", which hands it to a
# root service running provisioning/apply-bundle.yml). Empty: the step is skipped, and the result says so.
UPDATES_APPLY_COMMAND = env_str("ENCLAVE_UPDATES_APPLY_COMMAND", "")
UPDATES_APPLY_TIMEOUT_SECONDS = env_int("ENCLAVE_UPDATES_APPLY_TIMEOUT", 1800, minimum=1)
