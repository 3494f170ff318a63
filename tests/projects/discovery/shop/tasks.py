from celery import shared_task


@shared_task
def send_confirmation(order_id):
    return order_id
