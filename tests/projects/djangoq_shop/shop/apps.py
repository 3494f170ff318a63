from django.apps import AppConfig


class ShopConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "shop"

    def ready(self):
        from django_q.signals import pre_execute

        from shop.ledger import remember_task_id

        pre_execute.connect(remember_task_id, dispatch_uid="shop.remember_task_id")
