"""batchnorm layers (to be written)."""
