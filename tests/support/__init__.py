"""Test scaffolding kept out of the package: a Hub-compatible HTTP server on 127.0.0.1 and fault injection."""
