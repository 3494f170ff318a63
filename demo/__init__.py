"""airlock's demo: `make demo` (or `python -m demo`)."""
