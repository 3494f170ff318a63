"""URL configuration for proj project."""

from django.urls import path
from shop import views

urlpatterns = [
    path("ping/", views.ping),
    path("order/", views.order),
    path("order/rolled-back/", views.order_rolled_back),
]
