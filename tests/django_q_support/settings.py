"""Settings for the ``qcluster`` subprocess the django-q2 tests start.

The test project's settings, with the default database pointed at the test
database the pytest session created (``AIRLOCK_DJANGO_Q_DB``) and the cluster
reading its own queue (``AIRLOCK_DJANGO_Q_QUEUE``), so a parallel test run's
worker never takes these tasks. No ``AIRLOCK["EXECUTOR"]``: a task's run sends its
follow-ups through django-q2, its own queue, without one.
"""

from __future__ import annotations

import os

from tests.djangoproject.settings import *  # noqa: F403
from tests.djangoproject.settings import DATABASES, Q_CLUSTER

DATABASES = {**DATABASES, "default": {**DATABASES["default"], "NAME": os.environ["AIRLOCK_DJANGO_Q_DB"]}}
Q_CLUSTER = {**Q_CLUSTER, "cluster_name": os.environ["AIRLOCK_DJANGO_Q_QUEUE"]}
