from __future__ import annotations

from django.apps import AppConfig


class ServersConfig(AppConfig):
    name = "tests.servers"
    label = "servers"
