"""Production: every secret from the environment, no defaults; secure cookies and headers."""

from medportal.env import env_bool, env_int, env_list, env_str

from .base import *  # noqa: F403
from .keys import validated_fernet_keys, validated_pseudonym_key

DEBUG = False

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS")
MEDPORTAL_FERNET_KEYS = validated_fernet_keys(env_list("MEDPORTAL_FERNET_KEYS"), source="MEDPORTAL_FERNET_KEYS")
MEDPORTAL_PSEUDONYM_KEY = validated_pseudonym_key(env_str("MEDPORTAL_PSEUDONYM_KEY"), source="MEDPORTAL_PSEUDONYM_KEY")

# Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("MEDPORTAL_SSL_REDIRECT", True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env_int("MEDPORTAL_HSTS_SECONDS", 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [f"https://{host}" for host in ALLOWED_HOSTS])

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
