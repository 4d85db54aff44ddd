"""An offline dataset in memory: the flat, step-indexed D4RL/DSRL layout as a frozen struct of arrays.

Row ``i`` is one transition ``(s_i, a_i, r_i, c_i, s'_i, terminal_i, timeout_i)``. Episodes are not
stored explicitly: an episode ends at a step with ``terminals | timeouts`` (the convention of D4RL and
DSRL). The two flags mean different things to a learner and are kept apart on purpose:
``terminals`` stops bootstrapping (the MDP ended), ``timeouts`` does not (the episode was cut short).
A step can be both, and that is legitimate.

Every ``Dataset`` is validated when it is built (one row per step in every column, 2-D observations
and actions, finite numbers), so code that receives one never has to re-check it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import InitVar, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from o2o.errors import DatasetError

# The seven columns, in the order files store them. (N, obs) / (N, act) columns first, then per-step scalars.
COLUMNS = ("observations", "next_observations", "actions", "rewards", "costs", "terminals", "timeouts")
MATRIX_COLUMNS = ("observations", "next_observations", "actions")
SCALAR_COLUMNS = ("rewards", "costs", "terminals", "timeouts")
FLAG_COLUMNS = ("terminals", "timeouts")
DTYPES = {name: (np.bool_ if name in FLAG_COLUMNS else np.float32) for name in COLUMNS}

IN_MEMORY = "<in-memory dataset>"


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Offline transitions in the D4RL/DSRL flat layout (numpy, on the host).

    Floats are float32 and flags are bool whatever the input was. ``costs`` is all zeros with
    ``has_costs=False`` when the source had no cost signal (D4RL), so consumers can tell "no cost
    was measured" from "every cost was zero". ``metadata`` is JSON-able provenance (generator,
    policy, reference returns, where the file came from).

    Pass ``source=`` (not stored) to have validation errors name where the arrays came from.
    """

    observations: np.ndarray  # [N, obs] float32
    actions: np.ndarray  # [N, act] float32
    rewards: np.ndarray  # [N] float32
    costs: np.ndarray  # [N] float32; zeros when has_costs is False
    next_observations: np.ndarray  # [N, obs] float32
    terminals: np.ndarray  # [N] bool: the MDP ended, do not bootstrap
    timeouts: np.ndarray  # [N] bool: the episode was truncated, bootstrap
    has_costs: bool = True
    metadata: dict = field(default_factory=dict)
    source: InitVar[str] = IN_MEMORY

    def __post_init__(self, source: str) -> None:
        # Check the raw inputs first: casting would turn strings into errors with no column name,
        # NaN flags into True, and could hide a float64 value that overflows float32.
        validate(self, source)
        with np.errstate(over="ignore", invalid="ignore"):
            for name in COLUMNS:
                object.__setattr__(self, name, np.ascontiguousarray(getattr(self, name), dtype=DTYPES[name]))
        _check_finite({name: getattr(self, name) for name in COLUMNS}, source)
        object.__setattr__(self, "has_costs", bool(self.has_costs))
        object.__setattr__(self, "metadata", dict(self.metadata))

    # ----- sizes -------------------------------------------------------------------------------

    @property
    def num_transitions(self) -> int:
        return int(self.rewards.shape[0])

    def __len__(self) -> int:
        return self.num_transitions

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def __repr__(self) -> str:
        return (
            f"Dataset(num_transitions={self.num_transitions}, num_episodes={self.num_episodes}, "
            f"obs_dim={self.obs_dim}, act_dim={self.act_dim}, has_costs={self.has_costs})"
        )

    # ----- episodes ------------------------------------------------------------------------------

    @property
    def has_unfinished_tail(self) -> bool:
        """True when the last step has neither flag: the file stops mid-episode.

        ``episode_ends()`` still counts that tail as an episode (otherwise its steps would belong to
        no episode), and this flag lets statistics such as mean return leave it out.
        """
        n = self.num_transitions
        return n > 0 and not (self.terminals[-1] or self.timeouts[-1])

    def episode_ends(self) -> np.ndarray:
        """Index of the last step of each episode (inclusive), in order, as int64.

        Ends are the steps with ``terminals | timeouts``; an unfinished tail adds ``N - 1`` (see
        ``has_unfinished_tail``).
        """
        ends = np.flatnonzero(self.terminals | self.timeouts)
        if self.has_unfinished_tail:
            ends = np.append(ends, self.num_transitions - 1)
        return ends.astype(np.int64)

    @property
    def num_episodes(self) -> int:
        return int(self.episode_ends().shape[0])

    def episodes(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of each episode, ``stop`` exclusive, so ``rewards[start:stop]`` is one episode."""
        stops = self.episode_ends() + 1
        starts = np.concatenate([[0], stops[:-1]])
        return [(int(a), int(b)) for a, b in zip(starts, stops)]

    def episode_lengths(self) -> np.ndarray:
        """Steps per episode, int64 [num_episodes]."""
        return np.diff(np.concatenate([[0], self.episode_ends() + 1])).astype(np.int64)

    def _per_episode_sum(self, values: np.ndarray) -> np.ndarray:
        if self.num_transitions == 0:
            return np.zeros(0, np.float64)
        starts = np.array([start for start, _ in self.episodes()], dtype=np.int64)
        # float64 accumulation: a 1000-step float32 sum drifts in the 4th significant digit.
        return np.add.reduceat(values.astype(np.float64), starts)

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode, float64 [num_episodes]."""
        return self._per_episode_sum(self.rewards)

    def episode_costs(self) -> np.ndarray:
        """Undiscounted cost of each episode, float64 [num_episodes] (the quantity a cost limit bounds)."""
        if not self.has_costs:
            where = self.metadata.get("loaded_from", "this dataset")
            raise DatasetError(
                f"{where}: has no cost column, so episode costs are undefined; use a dataset with costs (DSRL layout)"
            )
        return self._per_episode_sum(self.costs)

    def select_episodes(self, mask_or_indices: Sequence[bool] | Sequence[int] | np.ndarray) -> Dataset:
        """A new dataset holding the chosen episodes, in the order given.

        ``mask_or_indices`` is a bool mask with one entry per episode or a list of episode indices
        (repeats allowed, e.g. for bootstrap resampling). If the unfinished tail is moved before another
        episode, its last step is marked as a timeout so the two do not merge into one episode.
        """
        spans = self.episodes()
        chosen = np.asarray(mask_or_indices)
        if chosen.dtype == np.bool_:
            if chosen.shape != (len(spans),):
                raise ValueError(f"episode mask has shape {chosen.shape}, expected ({len(spans)},)")
            chosen = np.flatnonzero(chosen)
        elif chosen.size == 0:
            chosen = np.zeros(0, np.int64)
        elif not np.issubdtype(chosen.dtype, np.integer):
            raise ValueError(f"select_episodes takes a bool mask or integer indices, got dtype {chosen.dtype}")
        chosen = chosen.astype(np.int64).reshape(-1)
        if chosen.size and (chosen.max() >= len(spans) or chosen.min() < -len(spans)):
            raise IndexError(f"episode index out of range for a dataset with {len(spans)} episodes")
        chosen = chosen % max(len(spans), 1)  # negative indices count from the end, as in numpy

        rows = [np.arange(*spans[k]) for k in chosen]
        index = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        columns = {name: getattr(self, name)[index] for name in COLUMNS}
        if self.has_unfinished_tail:
            tail = len(spans) - 1
            last_steps = np.cumsum([len(r) for r in rows]) - 1
            for position, episode in enumerate(chosen[:-1]):
                if episode == tail:
                    columns["timeouts"][last_steps[position]] = True
        return Dataset(**columns, has_costs=self.has_costs, metadata=dict(self.metadata))

    # ----- combining / export ------------------------------------------------------------------------

    @classmethod
    def concatenate(cls, datasets: Iterable[Dataset]) -> Dataset:
        """One dataset holding all steps of ``datasets`` in order (e.g. offline data from several policies).

        An unfinished tail of any dataset but the last is marked as a timeout, since the next dataset's
        first step starts a new episode. Mixing datasets with and without costs is refused: the result
        would claim costs it does not have for part of its steps.
        """
        datasets = list(datasets)
        if not datasets:
            raise ValueError("concatenate needs at least one dataset")
        obs_dims = {d.obs_dim for d in datasets}
        act_dims = {d.act_dim for d in datasets}
        if len(obs_dims) > 1 or len(act_dims) > 1:
            raise DatasetError(
                f"cannot concatenate datasets of different widths (obs {sorted(obs_dims)}, act {sorted(act_dims)}); "
                "they come from different tasks"
            )
        if len({d.has_costs for d in datasets}) > 1:
            raise DatasetError(
                "cannot concatenate datasets with and without costs; drop the cost-less ones or use a DSRL-layout dataset"
            )
        columns = {name: np.concatenate([getattr(d, name) for d in datasets]) for name in COLUMNS}
        offset = 0
        for d in datasets[:-1]:
            offset += d.num_transitions
            if d.has_unfinished_tail:
                columns["timeouts"][offset - 1] = True
        return cls(
            **columns,
            has_costs=datasets[0].has_costs,
            metadata={"concatenated_from": [d.metadata for d in datasets]},
        )

    def as_dict(self) -> dict[str, np.ndarray]:
        """The seven columns by their D4RL names (the arrays themselves, not copies)."""
        return {name: getattr(self, name) for name in COLUMNS}

    def replace(self, **changes: Any) -> Dataset:
        """A copy with some fields changed (re-validated), e.g. ``ds.replace(rewards=ds.rewards * 0.1)``."""
        return dataclasses.replace(self, **changes)


def concatenate(datasets: Iterable[Dataset]) -> Dataset:
    """Same as ``Dataset.concatenate``."""
    return Dataset.concatenate(datasets)


# ----- validation ----------------------------------------------------------------------------------------


def validate(ds: Dataset | Mapping[str, Any], source: str) -> None:
    """Raise ``DatasetError`` (one line naming ``source``) unless ``ds`` is a well-formed dataset.

    Accepts a ``Dataset`` or a mapping holding all seven columns. Checks: numeric dtypes, 2-D
    observations/actions and 1-D per-step columns, one row per step in every column, equal widths of
    observations and next_observations, finite values, and flags that are 0/1.
    """
    if isinstance(ds, Dataset):
        columns = {name: getattr(ds, name) for name in COLUMNS}
    else:
        missing = [name for name in COLUMNS if name not in ds]
        if missing:
            raise DatasetError(f"{source}: missing column(s) {', '.join(missing)}; a dataset needs all of {', '.join(COLUMNS)}")
        columns = {name: ds[name] for name in COLUMNS}
    check_columns(columns, source)


def check_columns(columns: Mapping[str, Any], source: str) -> None:
    """``validate`` for whichever of the seven columns are present (loaders check before filling gaps)."""
    arrays = {name: np.asarray(value) for name, value in columns.items() if name in COLUMNS}
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise DatasetError(
                f"{source}: column '{name}' holds non-numeric data (dtype {array.dtype}); every column must be numbers"
            )
    check_shapes({name: array.shape for name, array in arrays.items()}, source)
    _check_finite(arrays, source)
    for name in FLAG_COLUMNS:
        array = arrays.get(name)
        if array is not None and array.dtype != np.bool_:
            bad = np.flatnonzero((array != 0) & (array != 1))
            if bad.size:
                raise DatasetError(
                    f"{source}: column '{name}' has value {array[bad[0]]!r} at row {bad[0]}; flags must be 0 or 1"
                )


def check_shapes(shapes: Mapping[str, Sequence[int]], source: str) -> None:
    """The shape part of ``check_columns``: 2-D observations/actions and 1-D per-step columns, one row
    per step in every column, equal observation widths. Loaders call it on the file's declared shapes
    before reading, so a corrupt shape is refused before it is allocated."""
    shapes = {name: tuple(int(n) for n in shape) for name, shape in shapes.items() if name in COLUMNS}
    for name, shape in shapes.items():
        expected_ndim = 2 if name in MATRIX_COLUMNS else 1
        if len(shape) != expected_ndim:
            want = "[N, width]" if expected_ndim == 2 else "[N] (one value per step)"
            raise DatasetError(f"{source}: column '{name}' has shape {shape}, expected {want}")
    lengths = {name: shape[0] for name, shape in shapes.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise DatasetError(
            f"{source}: columns have different lengths ({listed}); every column needs one row per step, "
            "so the file is corrupt or was written wrongly"
        )
    if "observations" in shapes and "next_observations" in shapes:
        width, next_width = shapes["observations"][1], shapes["next_observations"][1]
        if width != next_width:
            raise DatasetError(
                f"{source}: observations are {width}-wide but next_observations are {next_width}-wide; they must match"
            )


def _check_finite(arrays: Mapping[str, np.ndarray], source: str) -> None:
    for name, array in arrays.items():
        if array.dtype.kind != "f" or array.size == 0:
            continue
        finite = np.isfinite(array)
        if finite.all():
            continue
        bad_rows = ~finite.all(axis=1) if array.ndim == 2 else ~finite
        row = int(np.argmax(bad_rows))
        value = array[row][~finite[row]].flat[0] if array.ndim == 2 else array[row]
        kind = "NaN" if np.isnan(value) else "inf"
        raise DatasetError(
            f"{source}: column '{name}' has {kind} at row {row} (first bad row); clean or drop those steps and save again"
        )
