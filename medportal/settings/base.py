"""Settings shared by every environment. Values come from the environment (see README)."""

from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from medportal.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# Everything the running product writes: SQLite file, broker folder, logs, models, local secrets.
DATA_DIR = Path(env_str("MEDPORTAL_DATA_DIR", str(BASE_DIR / "var"))).resolve()

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "auditlog",
    "axes",
    "medportal",
    "modeling",
    "cases",
    "evaluation",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "medportal.middleware.RequestSizeLimitMiddleware",
    "medportal.middleware.IdleSessionMiddleware",  # Django's, but background refreshes are not activity
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "medportal.urls"
WSGI_APPLICATION = "medportal.wsgi.application"
ASGI_APPLICATION = "medportal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'medportal.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the worker write to one SQLite file: WAL lets readers go on during a write,
    # IMMEDIATE transactions take the write lock up front (no failed lock upgrade), and a busy
    # timeout makes a writer wait instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update({
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    })
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Idle timeout: every request pushes the expiry forward, so the session ends after
# MEDPORTAL_SESSION_IDLE_MINUTES without activity.
SESSION_COOKIE_AGE = env_int("MEDPORTAL_SESSION_IDLE_MINUTES", 30, minimum=1) * 60
SESSION_SAVE_EVERY_REQUEST = True
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"

# Login throttling (django-axes): lock a username from an address after repeated failures.
AXES_FAILURE_LIMIT = env_int("MEDPORTAL_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("MEDPORTAL_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False

LANGUAGE_CODE = "zh-hans"
LANGUAGES = [("zh-hans", "简体中文"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("MEDPORTAL_TIME_ZONE", "Asia/Shanghai")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"

# Size limits: a request body over this is refused with 413 before any view reads it.
MEDPORTAL_MAX_REQUEST_BYTES = env_int("MEDPORTAL_MAX_REQUEST_BYTES", 512 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MEDPORTAL_MAX_REQUEST_BYTES
MEDPORTAL_MAX_FIELD_CHARS = 20_000
MEDPORTAL_MAX_FREE_TEXT_CHARS = 60_000
# POST /api/v1/analyze/ with wait=true waits this long for the answer, then answers 202.
MEDPORTAL_ANALYZE_WAIT_SECONDS = env_int("MEDPORTAL_ANALYZE_WAIT_SECONDS", 30, minimum=0)
# An analysis "running" longer than this lost its worker; the task's redelivery runs it again.
MEDPORTAL_ANALYSIS_STALE_SECONDS = env_int("MEDPORTAL_ANALYSIS_STALE_SECONDS", 600, minimum=30)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so an anonymous API call is a 401 that names the scheme.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "MedPortal API",
    "DESCRIPTION": "Case intake and analysis for the hospital's medical language model. "
    "Responses carry de-identified text only.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport: an embedded broker for the demo, no Redis needed.
    _BROKER_DIR = DATA_DIR / "broker"
    for _folder in ("queue", "control", "processed"):
        (_BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "control_folder": str(_BROKER_DIR / "control"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
CELERY_TASK_IGNORE_RESULT = True
# One queue per kind of work, so a hospital runs one GPU worker per queue and device
# (README); `make run` starts one worker for all of them.
CELERY_TASK_ROUTES = {
    "cases.tasks.*": {"queue": "inference"},
    "evaluation.tasks.*": {"queue": "evaluation"},
    "modeling.tasks.*": {"queue": "training"},
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# A hospital's own checkpoint instead of the bootstrapped medportal-tiny (see README): a local path or
# hub id, an optional LoRA adapter and quantisation (none | 8bit | 4bit). `bootstrap_model` registers it.
MEDPORTAL_BASE_MODEL = env_str("MEDPORTAL_BASE_MODEL", "")
MEDPORTAL_MODEL_NAME = env_str("MEDPORTAL_MODEL_NAME", "")
MEDPORTAL_ADAPTER = env_str("MEDPORTAL_ADAPTER", "")
MEDPORTAL_QUANTIZATION = env_str("MEDPORTAL_QUANTIZATION", "none")
if MEDPORTAL_QUANTIZATION not in {"none", "8bit", "4bit"}:
    raise ImproperlyConfigured(f"MEDPORTAL_QUANTIZATION must be none, 8bit or 4bit, not {MEDPORTAL_QUANTIZATION!r}.")

# Training runs (modeling.TrainingRun). Run folders and exported data go under MEDPORTAL_TRAINING_DIR, which the web
# process and the training workers must share (like the model folders).
MEDPORTAL_TRAINING_DIR = Path(env_str("MEDPORTAL_TRAINING_DIR", str(DATA_DIR / "training"))).resolve()
# A running run's worker touches heartbeat_at this often; a run silent for STALE seconds has lost its worker.
MEDPORTAL_TRAINING_HEARTBEAT_SECONDS = env_int("MEDPORTAL_TRAINING_HEARTBEAT_SECONDS", 10, minimum=1)
MEDPORTAL_TRAINING_STALE_SECONDS = env_int("MEDPORTAL_TRAINING_STALE_SECONDS", 120, minimum=2)
if MEDPORTAL_TRAINING_STALE_SECONDS <= 2 * MEDPORTAL_TRAINING_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured("MEDPORTAL_TRAINING_STALE_SECONDS must be more than twice MEDPORTAL_TRAINING_HEARTBEAT_SECONDS.")

# Keys for the original PHI (Fernet, newest first) and for keyed pseudonyms (HMAC).
# Each settings module fills these in; production demands them from the environment.
MEDPORTAL_FERNET_KEYS: list[str] = []
MEDPORTAL_PSEUDONYM_KEY = ""

LOG_DIR = DATA_DIR / "log"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("MEDPORTAL_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}


def log_to_file(logging_config: dict, log_dir: Path) -> dict:
    """Add a file handler under log_dir to a LOGGING dict (the canary test reads this file)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    config = {**logging_config, "handlers": dict(logging_config["handlers"])}
    config["handlers"]["file"] = {
        "class": "logging.FileHandler",
        "filename": str(log_dir / "medportal.log"),
        "formatter": "plain",
        "encoding": "utf-8",
    }
    config["root"] = {**logging_config["root"], "handlers": ["console", "file"]}
    return config

# Retraining from feedback (evaluation.ContinualRun): the replay sample of earlier training data (at most SIZE examples,
# RATIO per feedback example, stratified by diagnosis); the gate: the candidate's GATE_METRIC on the gate set may be at
# most MARGIN below the active version's, and on the replay set at most FORGETTING_BOUND below it; AUTO_PROMOTE makes a
# candidate that passed the gate active without an admin. RETRAIN_AFTER > 0 starts a run (from Celery beat, hourly)
# once that many new accepted feedback examples wait, on the case set named GATE_CASE_SET.
MEDPORTAL_REPLAY_SIZE = env_int("MEDPORTAL_REPLAY_SIZE", 200, minimum=0)
MEDPORTAL_REPLAY_RATIO = env_float("MEDPORTAL_REPLAY_RATIO", 4.0, minimum=0.0)
MEDPORTAL_GATE_METRIC = env_str("MEDPORTAL_GATE_METRIC", "accuracy")
if MEDPORTAL_GATE_METRIC not in {"accuracy", "gtpa@1", "gtpa@3"}:
    raise ImproperlyConfigured(f"MEDPORTAL_GATE_METRIC must be accuracy, gtpa@1 or gtpa@3, not {MEDPORTAL_GATE_METRIC!r}.")
MEDPORTAL_GATE_MARGIN = env_float("MEDPORTAL_GATE_MARGIN", 0.02, minimum=0.0, maximum=1.0)
MEDPORTAL_FORGETTING_BOUND = env_float("MEDPORTAL_FORGETTING_BOUND", 0.05, minimum=0.0, maximum=1.0)
MEDPORTAL_AUTO_PROMOTE = env_bool("MEDPORTAL_AUTO_PROMOTE", False)
MEDPORTAL_RETRAIN_AFTER = env_int("MEDPORTAL_RETRAIN_AFTER", 0, minimum=0)
MEDPORTAL_GATE_CASE_SET = env_str("MEDPORTAL_GATE_CASE_SET", "")
CELERY_BEAT_SCHEDULE = {}
if MEDPORTAL_RETRAIN_AFTER:
    CELERY_BEAT_SCHEDULE["retrain-from-feedback"] = {"task": "evaluation.tasks.retrain_when_feedback_waits",
                                                     "schedule": timedelta(hours=1)}
