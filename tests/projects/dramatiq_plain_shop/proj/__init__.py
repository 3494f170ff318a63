from . import dramatiq  # noqa: F401 - the broker, before any actor is defined (docs/dramatiq.md, without django_dramatiq)
