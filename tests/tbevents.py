"""The scalars of a TensorBoard log directory as TensorBoard shows them, read with tensorboardX's protobufs
(the tensorboard package is not a dependency): each events file's records, files in the order they were
opened, and a ``purge_step`` (a SessionLog START at step S) hiding the earlier files' events at steps >= S."""

import struct
from pathlib import Path


def _records(path: Path):
    data = path.read_bytes()
    at = 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        yield data[at + 12:at + 12 + length]  # 8 bytes length, 4 its CRC, the record, 4 its CRC
        at += 12 + length + 4


def tb_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` in the order written, purged events left out."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    files = []
    for path in Path(log_dir).glob("events.out.tfevents.*"):
        events = [Event.FromString(record) for record in _records(path)]
        files.append((events[0].wall_time if events else 0.0, path.name, events))
    scalars: dict[str, list[tuple[int, float]]] = {}
    for _, _, events in sorted(files):
        for event in events:
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                scalars = {tag: [(s, v) for s, v in points if s < event.step] for tag, points in scalars.items()}
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
    return scalars
