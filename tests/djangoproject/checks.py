"""Skip (or, under CI=true, fail) a Django test module when its database server is down."""

from __future__ import annotations

import pytest
from django.conf import settings

from tests.conftest import require_service


def require_database() -> None:
    """Call at the top of a module whose tests use the database."""
    if settings.ENGINE == "sqlite":
        return
    try:
        require_service("mariadb" if settings.ENGINE == "mariadb" else "postgres")
    except pytest.skip.Exception as skip:
        pytest.skip(skip.msg, allow_module_level=True)
