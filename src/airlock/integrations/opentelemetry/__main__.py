"""``python -m airlock.integrations.opentelemetry``: print a demo trace as a waterfall."""

from airlock.integrations.opentelemetry._demo import demo

demo()
