"""Paired comparison of timing policies in the simulator (local or Ray shards)."""
