"""Metrics that score attribution maps: how faithful, how stable, where they point."""
