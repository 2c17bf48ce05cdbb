"""Training loop pieces: optimisation, schedules, checkpoint state."""
