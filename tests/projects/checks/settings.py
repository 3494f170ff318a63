"""A tiny project for ``tests/test_django_checks.py``: ``AIRLOCK`` is ``CHECKS_AIRLOCK``, as JSON."""

import json
import os
import tempfile

SECRET_KEY = "airlock-checks-project"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CHECKS_DATABASE", os.path.join(tempfile.gettempdir(), "airlock-checks.sqlite3")),
    }
}

INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "airlock.integrations.django"]
MIDDLEWARE = ["airlock.integrations.django.AirlockMiddleware"]

AIRLOCK = json.loads(os.environ.get("CHECKS_AIRLOCK", "{}"))
