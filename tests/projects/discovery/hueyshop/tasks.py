from huey.contrib.djhuey import db_task


@db_task()
def send_confirmation(order_id):
    return order_id
