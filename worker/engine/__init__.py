"""Our backpropagation engine: a pure library, arrays in and arrays out (no Flask, Celery or DB)."""
