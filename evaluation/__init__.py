"""imitlab.evaluation."""
