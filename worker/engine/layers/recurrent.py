"""recurrent layers (to be written)."""
