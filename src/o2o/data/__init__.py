"""Offline data: the in-memory ``Dataset`` (D4RL/DSRL flat layout) and its HDF5 reader/writer."""

from o2o.data.dataset import COLUMNS, Dataset, concatenate, validate
from o2o.data.hdf5 import (
    TaskLike,
    check_task,
    derive_next_observations,
    load_hdf5,
    peek_metadata,
    recorded_task,
    save_hdf5,
    sha256_data,
    sha256_file,
)
from o2o.data.replay import (
    ReplayBuffer,
    mixed_sample,
    replay_add,
    replay_from_dataset,
    replay_init,
    replay_sample,
    replay_to_numpy,
)

__all__ = [
    "COLUMNS",
    "Dataset",
    "ReplayBuffer",
    "mixed_sample",
    "replay_add",
    "replay_from_dataset",
    "replay_init",
    "replay_sample",
    "replay_to_numpy",
    "TaskLike",
    "concatenate",
    "derive_next_observations",
    "load_hdf5",
    "check_task",
    "peek_metadata",
    "recorded_task",
    "save_hdf5",
    "sha256_data",
    "sha256_file",
    "validate",
]
