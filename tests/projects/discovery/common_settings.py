"""What every settings module of this project shares: a SQLite file and a Redis, both the test's own.

``DISCOVERY_DB`` is the database file, ``DISCOVERY_REDIS`` the broker's URL, and
``DISCOVERY_OUTBOX`` (JSON) adds options to ``AIRLOCK["OUTBOX"]``. The fast
path is off: every row waits for ``manage.py airlock_relay``, the process
under test.
"""

import json
import os

SECRET_KEY = "airlock-projects-discovery"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DISCOVERY_DB"]}}

REDIS_URL = os.environ["DISCOVERY_REDIS"]

OUTBOX = {"FAST_PATH": "off", **json.loads(os.environ.get("DISCOVERY_OUTBOX") or "{}")}
