"""Code that looks like task calls and is not: none of it may be reported."""

import queue
import sched
import socket
import time
from multiprocessing import Pool
from multiprocessing.pool import ThreadPool

import airlock
import blinker
from airlock import enqueue
from django.db import transaction
from django.dispatch import Signal

order_paid = Signal()
user_logged_in = blinker.signal("user-logged-in")
jobs = queue.Queue()


def square(x):
    return x * x


class Order:
    def save(self):
        # not a models.Model: self is not a model instance here
        airlock.enqueue(square, self)


def network(host):
    sock = socket.create_connection((host, 80))
    sock.send(b"GET / HTTP/1.0\r\n\r\n")
    sock.sendall(b"more")
    sock.sendto(b"x", (host, 53))


def signals(order):
    order_paid.send(sender=type(order), order=order)
    order_paid.send_robust(sender=type(order), order=order)
    user_logged_in.send(order)
    transaction.on_commit(lambda: order_paid.send(sender=None, order=order))


def generators():
    gen = yield
    gen.send(None)


def pools():
    with Pool(2) as pool:
        pool.apply_async(square, (3,))
    workers = ThreadPool(2)
    workers.apply_async(square, (4,))
    workers.apply_async(lambda: 1)


def schedulers(rq_queue):
    scheduler = sched.scheduler(time.monotonic, time.sleep)
    scheduler.enter(1, 1, square, (2,))
    rq_queue.enqueue(square, 2)
    jobs.put(2)


def through_airlock(order_id):
    with airlock.scope():
        airlock.enqueue(square, order_id)
        enqueue(square, order_id)
