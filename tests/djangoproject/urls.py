"""URLs for the test project: the shop views the Django integration's tests call."""

from __future__ import annotations

from django.urls import path

from tests.djangoproject.shop import views

urlpatterns = [
    path("checkout/", views.checkout),
    path("orders/", views.create_order),
    path("orders/atomic/", views.create_order_atomic),
    path("orders/naive/", views.create_order_naive),
    path("orders/async/", views.create_order_async),
    path("orders/async/atomic/", views.create_order_async_atomic),
]
