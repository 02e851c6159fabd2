"""Backprop Service: the pieces the API and the workers share (config, database models, CLI)."""
