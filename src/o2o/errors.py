"""Errors o2o reports to a user as one clear line (the CLI prints ``o2o: error: <message>`` and exits 2).

Raise an ``O2OError`` subclass for any bad input: the message names the problem and, where there is
one, the fix. Everything else is a bug and keeps its traceback.
"""


class O2OError(Exception):
    """Base class of user-facing errors."""


class UnknownTaskError(O2OError):
    """A task name that is not in the registry."""


class ConfigError(O2OError):
    """A wrong config key, a value of the wrong type, or a malformed preset."""


class DatasetError(O2OError):
    """A dataset file that is missing, corrupt or does not match its task."""


class RunDirError(O2OError):
    """A run directory that cannot be created, resumed or read."""


class RunInUseError(RunDirError):
    """A run directory another process trains in (it holds the run's lock)."""


class DivergedError(O2OError):
    """A loss, parameter or action that is NaN or inf: the run stops and saves nothing of that state."""


class RunFinished(Exception):
    """Not an error: ``--resume`` of a run that has finished. The CLI says so and exits 0; the run's
    files are left as they are."""
