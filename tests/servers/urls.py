"""The served project's URLs: one request shape, in the variants the tests and the bench compare."""

from __future__ import annotations

from django.urls import path

from tests.servers import views

urlpatterns = [
    path("ping/", views.ping),
    path("order/", views.order),
    path("order/none/", views.order_none),
    path("order/celery/", views.order_celery),
    path("order/async/", views.order_async),
    path("publisher/", views.publisher),
]
