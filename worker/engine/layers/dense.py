"""dense layers (to be written)."""
