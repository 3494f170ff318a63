"""Dramatiq, Huey and Django Tasks calls that bypass airlock (AIR003-AIR006)."""

import dramatiq
from django.db import transaction
from django.tasks import task
from huey import RedisHuey

from shop import actors

from . import jobs

huey = RedisHuey("shop")


@dramatiq.actor(queue_name="mail")
def send_receipt(order_id):
    pass


@huey.task()
def resize(image_id):
    pass


@task(priority=10)
def index_order(order_id):
    pass


def place(order):
    send_receipt.send(order.pk)  # expect: AIR003
    send_receipt.send_with_options(args=(order.pk,), delay=10_000)  # expect: AIR004
    resize.schedule((7,), delay=30)  # expect: AIR005
    resize.schedule(args=(7,), eta=order.when)  # expect: AIR005
    index_order.enqueue(order.pk)  # expect: AIR006
    index_order.using(queue_name="slow", priority=5).enqueue(order.pk)  # expect: AIR006
    jobs.rebuild.send(order.pk)  # expect: AIR003
    actors.notify.send(order.pk)  # expect: AIR003
    transaction.on_commit(lambda: index_order.enqueue(order.pk))  # expect: AIR010
    transaction.on_commit(lambda: send_receipt.send(order.pk))  # expect: AIR010


def fine(order):
    resize.call_local(7)  # runs here, no queue
    send_receipt(order.pk)  # a plain call
