"""The ground floor: what every layer shares (errors, versioned JSON documents, seed ranges, observation keys, how
a policy head's outputs become actions).

Modules here import numpy and gymnasium at most, never torch or another imitlab package, so the torch-free
deployment runtime and ``imitlab --help`` can use them.
"""
