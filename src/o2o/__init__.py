"""o2o: offline-to-online reinforcement learning, safe and unconstrained, in JAX."""

__version__ = "0.1.0"
