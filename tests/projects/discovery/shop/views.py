from django.http import HttpResponse


def confirm(request, order_id):
    from shop.tasks import send_confirmation  # imported lazily: nothing imports it at start-up

    send_confirmation.delay(order_id)
    return HttpResponse("ok")
