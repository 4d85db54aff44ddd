"""Create an environment whose episodes are reproducible: ``make_env(task, seed)``.

Bullet-Safety-Gym (BSG) 1.4.0 has two reproducibility defects that this module works around:

1. It ignores ``reset(seed=...)``: the spawn position, heading and joint noise are drawn from
   NumPy's *global* RNG, so seeding the env does nothing, and several envs in one process (or
   vector-env workers forked from one parent) draw from one shared stream or start identically.
   ``SeededEnv`` gives each env its own ``np.random.Generator``; at every reset it draws an
   ``episode_seed`` and runs the inner reset with the global RNG seeded by it, then gives the
   caller its global RNG state back untouched. (The swap is not thread-safe: step envs from one
   thread.)
2. ``reset`` restores a PyBullet snapshot, but PyBullet snapshots do not hold motor commands, so the
   velocity/position targets of the last action of the previous episode keep acting during the
   settling step of the reset (RaceCar wheels, Drone rotors): the same seed then gives a different
   first observation depending on what happened before. ``SeededEnv`` releases every motor
   (velocity control, zero force: what RaceCar's constructor sets) before each reset, so every
   episode is a pure function of its ``episode_seed`` and its actions.

MuJoCo and classic-control envs draw only from their own ``np_random``, which
``reset(seed=episode_seed)`` re-creates, so the same contract holds for them without the swap.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np

from o2o.envs.registry import Task, get_task

# Episode seeds are drawn in [0, 2**31) so that they are valid for np.random.seed and gymnasium.
_EPISODE_SEED_BOUND = 2**31
# The global-RNG seed BSG's constructor draws from (it draws a few numbers while building bodies).
_CONSTRUCTION_SEED = 0


class _PrivateGlobalRNG:
    """Context manager: run a block with NumPy's global RNG in a given state and hand the caller's
    state back afterwards; ``.state`` holds the global state the block left behind.

    ``np.random.get_state``/``set_state`` cost ~45 us each here, so this is used once per episode
    (and per step only when ``isolate_step_rng`` asks for it).
    """

    def __init__(self, seed: int | None = None, state: tuple | None = None):
        self._seed = seed
        self.state = state
        self._caller_state: tuple | None = None

    def __enter__(self) -> _PrivateGlobalRNG:
        self._caller_state = np.random.get_state()
        if self._seed is not None:
            np.random.seed(self._seed)
        else:
            np.random.set_state(self.state)
        return self

    def __exit__(self, *exc: object) -> None:
        self.state = np.random.get_state()
        np.random.set_state(self._caller_state)


@contextlib.contextmanager
def _process_std_streams() -> Iterator[None]:
    """Run a block with ``sys.stdout``/``sys.stderr`` set to the process's own streams.

    BSG silences PyBullet by flushing C's stdio through the libc symbol named after
    ``sys.stdout.name``; when the streams are replaced (pytest's capture, Jupyter) that name is not
    a symbol and building an env fails with ``ValueError: undefined symbol``.
    """
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.__stdout__ or sys.stdout
    sys.stderr = sys.__stderr__ or sys.stderr
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def _release_bullet_motors(bullet_env: Any) -> None:
    """Put every motorised joint of a BSG agent in velocity control with zero force (free joint).

    PyBullet's ``restoreState`` (what BSG's reset uses) does not restore motor commands, so without
    this the previous episode's last action leaks into the next episode's first observation.
    """
    agent, client = bullet_env.agent, bullet_env.bc
    for joint in agent.joint_list:
        if joint.type in ("REVOLUTE", "PRISMATIC"):
            client.setJointMotorControl2(agent.body_id, joint.index, client.VELOCITY_CONTROL,
                                         targetVelocity=0, force=0)


class SeededEnv(gym.Wrapper):
    """Reproducible episodes, float32 observations and a float ``info["cost"]`` on every step.

    The wrapper owns ``np.random.default_rng(seed)``. Each ``reset()`` draws ``episode_seed`` from
    it (``reset(seed=s)`` first re-seeds it); the episode is then a pure function of
    ``episode_seed`` and the actions, whatever other envs in the process do.
    ``reset_episode(episode_seed)`` replays a given episode start without drawing (exact resume).
    """

    def __init__(self, env: gym.Env, task: Task, seed: int, *, isolate_step_rng: bool = False,
                 render_size: tuple[int, int] | None = None):
        super().__init__(env)
        self.task = task
        self.render_size = render_size  # (width, height) of render()'s frames; None: not made for rendering
        self._rng = np.random.default_rng(seed)
        self._draws_from_global_rng = task.family == "bullet"
        # BSG's 8 tasks draw from the global RNG only in reset (tests/test_envs.py checks it), so
        # the per-step swap is off by default: it costs ~4 x 45 us on a ~270 us BallCircle step.
        self.isolate_step_rng = isolate_step_rng and self._draws_from_global_rng
        self._global_rng_state: tuple | None = None
        self.episode_seed: int | None = None
        space = env.observation_space
        self.observation_space = gym.spaces.Box(space.low.astype(np.float32),
                                                space.high.astype(np.float32), dtype=np.float32)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new episode with a seed drawn from this env's own generator."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        return self.reset_episode(int(self._rng.integers(_EPISODE_SEED_BOUND)), options=options)

    def reset_episode(self, episode_seed: int,
                      options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start the episode that ``episode_seed`` determines, without touching the generator."""
        self.episode_seed = int(episode_seed)
        if self._draws_from_global_rng:
            _release_bullet_motors(self.env.unwrapped)
            with _PrivateGlobalRNG(seed=self.episode_seed) as private:
                obs, info = self.env.reset(seed=self.episode_seed, options=options)
            self._global_rng_state = private.state
        else:
            obs, info = self.env.reset(seed=self.episode_seed, options=options)
        info = dict(info, episode_seed=self.episode_seed)
        return np.asarray(obs, dtype=np.float32), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.isolate_step_rng:
            with _PrivateGlobalRNG(state=self._global_rng_state) as private:
                obs, reward, terminated, truncated, info = self.env.step(action)
            self._global_rng_state = private.state
        else:
            obs, reward, terminated, truncated, info = self.env.step(action)
        info["cost"] = float(info.get("cost", 0.0))  # BSG gives an int; others give nothing
        return (np.asarray(obs, dtype=np.float32), float(reward), bool(terminated),
                bool(truncated), info)

    def render(self) -> np.ndarray:
        """An RGB frame [height, width, 3] uint8 of the current state, on the CPU, for an env made with
        ``make_env(..., render_size=(width, height))``. Bullet tasks draw with PyBullet's TinyRenderer
        (BSG's ``render(mode='rgb_array')``, through the task's own camera); MuJoCo ones with MuJoCo's
        renderer, headless through EGL when there is no display and ``MUJOCO_GL`` is unset (``make_env``
        sets it); classic-control ones (Pendulum) with pygame, at their own size."""
        from o2o.errors import O2OError

        if self.render_size is None:
            raise O2OError(f"this {self.task.name} env was not made for rendering; use make_env(task, seed, render_size=(width, height))")
        if self.task.family == "bullet":
            bullet_env = self.env.unwrapped
            bullet_env.world.camera.render_width, bullet_env.world.camera.render_height = self.render_size
            # BSG's cost marker, a red sphere around the agent, starts at alpha 0.001, which TinyRenderer
            # draws opaque, hiding the agent until its first cost: show it only on a step with cost
            agent = bullet_env.agent
            bullet_env.bc.changeVisualShape(agent.violation_body_id, -1,
                                            rgbaColor=[1, 0, 0, 0.5 if agent._violates_constraints else 0.0])
            return np.asarray(bullet_env.render(mode="rgb_array"), np.uint8)
        try:
            return np.asarray(self.env.render(), np.uint8)
        except Exception as err:  # no OpenGL context: GLFW without a display, EGL / OSMesa missing
            raise O2OError(f"cannot render {self.task.name}: its renderer failed ({type(err).__name__}: {err}); for MuJoCo "
                           f"on a machine without a display set MUJOCO_GL=egl or MUJOCO_GL=osmesa") from None

    def get_state(self) -> dict[str, Any]:
        """The generator's state (JSON-serialisable): with ``set_state`` it resumes the exact
        sequence of future episode seeds."""
        return self._rng.bit_generator.state

    def set_state(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state


def make_env(task: Task | str, seed: int, *, isolate_step_rng: bool = False,
             render_size: tuple[int, int] | None = None, max_episode_steps: int | None = None) -> SeededEnv:
    """Create ``task``'s environment (with its time limit) wrapped in ``SeededEnv``.

    ``max_episode_steps`` replaces the task's time limit (``Task.horizon``) for this environment only
    (e.g. Monte-Carlo values continued past it, as a critic that bootstraps through time limits sees them).

    ``isolate_step_rng`` also swaps NumPy's global RNG around every ``step`` (only meaningful for
    Bullet tasks; none of the registered ones draws during a step, so it is off by default).
    ``render_size=(width, height)``: ``env.render()`` returns RGB frames of that size.
    """
    task = get_task(task)
    kwargs: dict[str, Any] = {}
    if task.family == "bullet":
        import bullet_safety_gym  # noqa: F401  (its import registers the Safety*-v0 ids)
    elif render_size is not None:  # gymnasium's envs fix their renderer at construction
        kwargs = {"render_mode": "rgb_array"}
        if task.family == "mujoco":  # classic control draws at its own size
            kwargs.update(width=int(render_size[0]), height=int(render_size[1]))
            if not os.environ.get("DISPLAY") and not os.environ.get("MUJOCO_GL"):
                # no display: MuJoCo's headless EGL backend (gymnasium would try GLFW first and fail)
                os.environ["MUJOCO_GL"] = "egl"
                os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    # The passive env checker costs time on every step and only repeats what our tests check.
    # BSG draws from the global RNG while building bodies: make that private and deterministic.
    with _PrivateGlobalRNG(seed=_CONSTRUCTION_SEED), _process_std_streams():
        if max_episode_steps is not None:
            kwargs["max_episode_steps"] = int(max_episode_steps)
        env = gym.make(task.env_id, disable_env_checker=True, **kwargs)
    space = env.action_space
    if not (np.all(space.low == -1.0) and np.all(space.high == 1.0)):
        # Agents act in [-1, 1]^d everywhere (tanh policies); map that box onto the env's own bounds
        # (only Pendulum's [-2, 2] among the registered tasks).
        env = gym.wrappers.RescaleAction(env, -1.0, 1.0)
        # gymnasium 0.28.1's RescaleAction maps actions but leaves action_space at the old bounds.
        env.action_space = gym.spaces.Box(-1.0, 1.0, space.shape, np.float32)
    return SeededEnv(env, task, seed, isolate_step_rng=isolate_step_rng, render_size=render_size)
