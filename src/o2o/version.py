"""o2o's version (the package's ``__version__``; pyproject.toml holds the same)."""

__version__ = "0.1.0"
