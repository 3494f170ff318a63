"""Found by no autodiscovery: listed in ``CELERY_IMPORTS``."""

from celery import shared_task


@shared_task
def rebuild_index():
    return None
