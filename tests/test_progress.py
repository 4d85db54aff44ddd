"""Progress off a terminal: timestamped lines at a bounded rate and at completion, not one final frame."""

import io
import re

from o2o.progress import LineProgress, make_progress


def test_line_progress_prints_at_its_interval_and_at_completion():
    out = io.StringIO()
    with LineProgress(every=1e9, file=out) as bar:
        tid = bar.add_task("behaviour SAC Hopper", total=150, completed=0, status="")
        for it in range(1, 151):
            bar.update(tid, completed=it, status=f"steps {it * 1000}")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1  # the interval never elapsed: only the completion line
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] behaviour SAC Hopper: 150/150 \(100%\), 0:00 elapsed \| steps 150000", lines[0])

    out = io.StringIO()
    with LineProgress(every=0.0, file=out) as bar:
        tid = bar.add_task("sweep x", total=4, completed=1, status="")
        bar.update(tid, completed=2, status="running: a")
        bar.advance(tid)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # one per update (interval 0); the last state was printed, so not again at exit
    assert "sweep x: 2/4 (50%)" in lines[0] and "left | running: a" in lines[0]
    assert lines[1].endswith("sweep x: 3/4 (75%), 0:00 elapsed, ~0:00 left | running: a")

    out = io.StringIO()
    with LineProgress(every=1e9, file=out) as bar:  # stopped early (an error, Ctrl-C): its last state at exit
        tid = bar.add_task("pretrain cql", total=10000, completed=2000, status="")
        bar.update(tid, completed=3000, status="upd/s 8.1")
    assert out.getvalue().splitlines()[-1].endswith("pretrain cql: 3000/10000 (30%), 0:00 elapsed, ~0:00 left | upd/s 8.1")


def test_make_progress_uses_lines_off_a_terminal_and_nothing_when_disabled(capsys):
    from rich.progress import Progress

    assert isinstance(make_progress(True), LineProgress)  # pytest's stdout is not a terminal
    disabled = make_progress(False)
    assert isinstance(disabled, Progress) and disabled.disable
