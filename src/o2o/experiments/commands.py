"""Command-line front ends of the experiments layer (``o2o sweep``, ``o2o report``).

``add_parsers(sub, add_config_args)`` adds the sub-commands to the ``o2o`` parser; ``COMMANDS`` maps
each command name to its handler ``f(args) -> int``. Kept here so that the experiments layer owns its
commands and ``cli.py`` only wires them in.
"""

from __future__ import annotations

COMMANDS: dict = {}


def add_parsers(sub, add_config_args) -> None:
    """Add this layer's sub-commands to ``sub`` (an argparse sub-parsers action)."""
