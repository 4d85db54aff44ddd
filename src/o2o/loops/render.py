"""Episodes of a run's deterministic policy as a GIF or MP4: ``o2o eval RUN_DIR --render FILE``.

Frames are drawn on the CPU (``SeededEnv.render``), every ``stride``-th step so that a video holds at
most ``max_frames`` frames (plus each episode's last), with the episode's return and cost so far
written on a band at the top. A GIF is kept small (240 x 180 pixels); an MP4 (480 x 360) needs the
``imageio-ffmpeg`` package.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from o2o.errors import O2OError

# (width, height) of the frames per format
FRAME_SIZE = {".gif": (240, 180), ".mp4": (480, 360)}


def check_video_path(path: str | Path) -> Path:
    """``path`` if o2o can write its format (.gif; .mp4 with imageio-ffmpeg); else a one-line error."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FRAME_SIZE:
        raise O2OError(f"cannot render to '{path.name}': unknown video format '{suffix or '(none)'}'; give a file ending in .gif or .mp4")
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise O2OError("writing .mp4 needs the imageio-ffmpeg package (pip install 'o2o[video]', or make install); or render to a .gif") from None
    return path


def _overlay(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` with ``text`` in white on a dark band along its top."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    size = max(10, frame.shape[0] // 15)
    try:
        font = ImageFont.load_default(size=size)
        while size > 8 and draw.textlength(text, font=font) > frame.shape[1] - 8:  # shrink until the line fits
            size -= 1
            font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        font = ImageFont.load_default()
    draw.rectangle([0, 0, frame.shape[1], size + 6], fill=(20, 20, 20))
    draw.text((4, 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def render_episodes(policy, path: str | Path, *, episodes: int = 1, seed: int = 0, max_frames: int = 300) -> dict:
    """Play ``episodes`` episodes of ``policy`` (``o2o.load_policy``'s) on ``make_env(task, seed)`` and
    write them to the video ``path`` (.gif or .mp4). Returns the episodes' returns and costs, the
    frames written and the stride."""
    import imageio.v3 as iio

    from o2o.envs import get_task, make_env

    path = check_video_path(path)
    if episodes < 1:
        raise O2OError(f"--episodes must be >= 1, got {episodes}")
    task = get_task(policy.task)
    stride = max(1, math.ceil(episodes * task.horizon / max_frames))
    env = make_env(task, seed, render_size=FRAME_SIZE[path.suffix.lower()])
    frames, returns, costs = [], [], []
    try:
        for episode in range(episodes):
            obs, _ = env.reset()
            ret, cost, t, done = 0.0, 0.0, 0, False
            while not done:
                obs, reward, terminated, truncated, info = env.step(policy(obs))
                ret, cost, t, done = ret + reward, cost + info["cost"], t + 1, terminated or truncated
                if t % stride == 0 or done:
                    text = (f"{task.name}" + (f" ep {episode + 1}/{episodes}" if episodes > 1 else "")
                            + f"  t {t}  return {ret:.1f}" + (f"  cost {cost:.0f}" if task.safe else ""))
                    frames.append(_overlay(env.render(), text))
            returns.append(ret)
            costs.append(cost)
    finally:
        env.close()
    dt = getattr(env.unwrapped, "dt", 0.05)  # seconds of simulated time per env step
    fps = float(np.clip(1.0 / (dt * stride), 5, 30))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        iio.imwrite(path, np.stack(frames), extension=".gif", duration=1000.0 / fps, loop=0)
    else:
        import imageio.v2 as imageio

        imageio.mimwrite(path, frames, fps=fps)
    return {"returns": returns, "costs": costs if task.safe else None, "frames": len(frames), "stride": stride, "fps": fps}
