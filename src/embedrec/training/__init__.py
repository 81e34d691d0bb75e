"""Batches, losses, optimisers and the training loop."""
