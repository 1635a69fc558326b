"""Test scaffolding kept off the hot path: a local Hub server (and, later, the fake-cache writers).

Nothing in the sweep imports this package; tests and demos do.
"""
