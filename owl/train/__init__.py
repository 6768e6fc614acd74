"""Training: matching, losses, optimisers and the training loop."""
