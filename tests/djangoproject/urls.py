"""URLs for the test project; the Django integration's tests add their views here."""

from __future__ import annotations

urlpatterns: list = []
