"""airlock's benchmarks: `python -m bench` prints every figure as a ratio to a same-run baseline."""
