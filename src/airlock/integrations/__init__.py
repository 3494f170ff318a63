"""Bridges to the frameworks and queues airlock works with. Each needs its extra."""
