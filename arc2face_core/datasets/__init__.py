"""Synthetic face datasets: identity sampling, per-image seeds, the dataset folder, batches, shards and Ray."""
