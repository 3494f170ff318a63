"""The worker's first module: ``dramatiq proj.worker shop.tasks`` sets Django up before the actors."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
django.setup()
