"""conv layers (to be written)."""
