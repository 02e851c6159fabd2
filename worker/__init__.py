"""Training workers: the Celery app and tasks, and the backpropagation engine (worker.engine)."""
