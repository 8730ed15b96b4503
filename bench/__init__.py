"""Benchmarks of the pack against the libraries a user would use instead (scripts, not tests): see RESULTS.md."""
