"""The project's Celery app, as Celery's "First steps with Django" lays it out."""

import os

from celery import Celery

# Set the default Django settings module for the 'celery' program.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")

# Every Celery setting is a CELERY_-prefixed Django setting.
app.config_from_object("django.conf:settings", namespace="CELERY")

# Load the task modules of every installed app (shop/tasks.py): the worker does,
# and nothing else in this project imports shop.tasks at start-up.
app.autodiscover_tasks()
