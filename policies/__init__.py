"""imitlab.policies."""
