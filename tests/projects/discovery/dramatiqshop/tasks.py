import dramatiq


@dramatiq.actor
def send_confirmation(order_id):
    return order_id
