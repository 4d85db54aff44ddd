"""Experiments: aggregation over seeds, learning-curve figures, report tables."""
