"""Training: the one loop (loop.py) and its rooms: batches, optimiser and schedules, step monitor, periodic evaluation, distributed."""
