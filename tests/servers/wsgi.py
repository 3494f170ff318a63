"""``gunicorn tests.servers.wsgi`` (``AIRLOCK_SERVERS_WARM=1``: hand off one intent at import,
so a ``--preload`` master has a publisher of its own before it forks)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.servers.settings")

from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()

if os.environ.get("AIRLOCK_SERVERS_WARM") == "1":
    from tests.servers.views import warm

    warm()
