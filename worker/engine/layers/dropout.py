"""dropout layers (to be written)."""
