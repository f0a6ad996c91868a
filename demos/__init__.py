"""imitlab.demos."""
