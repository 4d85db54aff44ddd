"""Faults from fault injection (issue #40): each ends with one line and exit status 2, and nothing is
written outside where the user pointed or lost from a run."""

import pytest

from o2o.cli import main
from test_cli import one_error_line, run, write_dataset


@pytest.mark.parametrize("name", ["../../x", "sub/x", "/abs/x", "..", "."])
def test_data_import_name_stays_in_the_data_directory(capsys, tmp_path, monkeypatch, name):
    data = tmp_path / "work" / "data"
    monkeypatch.setenv("O2O_DATA_DIR", str(data))
    src = tmp_path / "src.hdf5"
    write_dataset(src)
    code, _, err = run(capsys, "data", "import", str(src), "--name", name)
    assert code == 2
    assert f"--name '{name}' is not a dataset name" in one_error_line(err)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["src.hdf5"]
    code, out, _ = run(capsys, "data", "import", str(src), "--name", "ok")
    assert code == 0 and (data / "ok.hdf5").is_file()
