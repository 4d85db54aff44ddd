"""Bad inputs for lab/faults/show.sh (issue #40), made on the spot (no committed blobs); the same
builders as tests/test_faults.py. Usage: python build.py WHAT ARGS... (see the functions below)."""

import json
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np


def dataset(path, n=20, obs=8, act=2, **replace):
    """A small valid dataset file (tests/test_cli.py's write_dataset)."""
    import h5py

    cols = {"observations": np.zeros((n, obs), np.float32), "next_observations": np.zeros((n, obs), np.float32),
            "actions": np.zeros((n, act), np.float32), "rewards": np.ones((n,), np.float32), "costs": np.zeros((n,), np.float32),
            "terminals": np.zeros((n,), bool), "timeouts": (np.arange(n) % 10 == 9)}
    cols.update(replace)
    with h5py.File(path, "w") as f:
        for k, v in cols.items():
            if v is not None:
                f.create_dataset(k, data=v)


def extlink(path, target):
    """A dataset whose 'rewards' column is an external link to ``target`` (a text file)."""
    import h5py

    Path(target).write_text("not hdf5\n")
    dataset(path, rewards=None)
    with h5py.File(path, "a") as f:
        f["rewards"] = h5py.ExternalLink(str(target), "/data")


def huge(path, rows=200_000_000):
    """A file of a few kB whose every column declares 200M rows (6 GB of float32 observations); none is written."""
    import h5py

    with h5py.File(path, "w") as f:
        for key, width in (("observations", 8), ("next_observations", 8), ("actions", 2)):
            f.create_dataset(key, shape=(rows, width), dtype="f4", chunks=(1 << 16, width), compression="gzip")
        for key in ("rewards", "costs", "terminals", "timeouts"):
            f.create_dataset(key, shape=(rows,), dtype="f4", chunks=(1 << 16,), compression="gzip")
    print(f"{path}: {Path(path).stat().st_size} bytes on disk, {rows} rows declared")


def metadata(path, stored):
    """A valid dataset whose o2o_metadata attribute is ``stored`` (not a JSON object)."""
    import h5py

    dataset(path)
    with h5py.File(path, "a") as f:
        f.attrs["o2o_metadata"] = stored


def _latest(run):
    ckpts = Path(run) / "checkpoints"
    return ckpts / (ckpts / "latest").read_text().strip()


def ckpt_json(run, file, content):
    """Overwrite ``file`` (meta.json / host_state.json) of ``run``'s latest checkpoint: ``content`` as it
    is, or ``drop:KEY`` (a key removed) / ``set:KEY`` (a counter given as a string) of the file as written."""
    ckpt = _latest(run)
    if content.startswith(("drop:", "set:")):
        host = json.loads((ckpt / file).read_text())
        if content.startswith("drop:"):
            del host[content[5:]]
        else:
            host["counters"][content[4:]] = "1"
        content = json.dumps(host)
    (ckpt / file).write_text(content)


def nan_weights(run):
    """One NaN in the actor's first kernel of ``run``'s latest checkpoint, with a matching size and CRC
    (altered on purpose, which the CRC cannot catch)."""
    from flax import serialization

    ckpt = _latest(run)
    state = serialization.msgpack_restore((ckpt / "arrays.msgpack").read_bytes())
    params = state["agent"]["actor"]["params"]["params"]["Dense_0"]
    params["kernel"] = np.array(params["kernel"])
    params["kernel"][0, 0] = np.nan
    data = serialization.msgpack_serialize(state)
    (ckpt / "arrays.msgpack").write_bytes(data)
    meta = json.loads((ckpt / "meta.json").read_text())
    (ckpt / "meta.json").write_text(json.dumps({**meta, "arrays_bytes": len(data), "arrays_crc32": zlib.crc32(data)}))


def binary(path):
    """512 bytes that are not UTF-8."""
    Path(path).write_bytes(bytes(range(128, 256)) * 4)


def archive(root, case, secret):
    """A results archive (``o2o report``'s layout) holding one finished run, spoilt by ``case``: file /
    folder / run_folder (a symbolic link to ``secret``), dotdot (the index names a run outside it),
    int_run_id / meta_list (an index.json of the wrong types)."""
    root, secret = Path(root), Path(secret)
    secret.mkdir(parents=True, exist_ok=True)
    (secret / "key").write_text("private\n")
    (secret / "summary.json").write_text("{}\n")
    run_id = "sac/Pendulum/seed0"
    run_dir = root / "runs" / run_id
    run_dir.mkdir(parents=True)
    for name in ("config.yaml", "metrics.csv", "summary.json"):
        (run_dir / name).write_text("{}\n")
    index = {"meta": {}, "runs": [{"run_id": run_id, "status": "finished"}]}
    if case == "file":
        (run_dir / "metrics.csv").unlink()
        (run_dir / "metrics.csv").symlink_to(secret / "key")
    elif case == "folder":
        (run_dir / "bridge").symlink_to(secret)
    elif case == "run_folder":
        shutil.rmtree(run_dir)
        run_dir.symlink_to(secret)
    elif case == "dotdot":
        index["runs"][0]["run_id"] = "../../" + secret.name
    elif case == "int_run_id":
        index["runs"][0]["run_id"] = 5
    elif case == "meta_list":
        index = {"meta": [], "runs": {"run_id": run_id}}
    (root / "index.json").write_text(json.dumps(index))


def send(signame, metrics, rows, *cmd):
    """Run ``cmd`` (its output as this process's), send it SIG``signame`` once ``metrics`` (a metrics.csv)
    has ``rows`` rows, and exit with its exit status. SIGINT reaches it as a terminal's Ctrl-C would (a
    background job of a script would otherwise inherit "ignore SIGINT")."""
    import signal
    import subprocess
    import time

    signum = getattr(signal, "SIG" + signame)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # inherited by the child
    proc = subprocess.Popen(cmd)
    path, deadline = Path(metrics), time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if path.is_file() and len(path.read_text().splitlines()) - 1 >= int(rows):
            break
        time.sleep(0.1)
    proc.send_signal(signum)  # a no-op once it has ended
    try:
        rc = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    sys.exit(rc if rc >= 0 else 128 - rc)


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
