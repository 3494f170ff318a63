"""Settings for the ``db_worker`` subprocess the ``django.tasks`` tests start.

The test project's settings, with the default database pointed at the test
database the pytest session created (``AIRLOCK_TASKS_DB``). Nothing sets
``AIRLOCK["EXECUTOR"]``: the runs' follow-ups go through ``django_tasks_executor``
because that is the task-run scope's default.
"""

from __future__ import annotations

import os

from tests.djangoproject.settings import *  # noqa: F403
from tests.djangoproject.settings import DATABASES

DATABASES = {**DATABASES, "default": {**DATABASES["default"], "NAME": os.environ["AIRLOCK_TASKS_DB"]}}
