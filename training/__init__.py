"""imitlab.training."""
