"""flatten layers (to be written)."""
