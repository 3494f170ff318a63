"""``gunicorn tests.servers.wsgi``.

``AIRLOCK_SERVERS_WARM``: hand off one intent at import, so that a ``--preload``
master has a publisher of its own before it forks: ``busy`` forks while that
publisher may still be publishing (as gunicorn does, right after the import),
``idle`` waits until it has published.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.servers.settings")

from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()

if os.environ.get("AIRLOCK_SERVERS_WARM") in ("busy", "idle"):
    from tests.servers.views import warm

    warm(wait=os.environ["AIRLOCK_SERVERS_WARM"] == "idle")
