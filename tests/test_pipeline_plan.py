"""The pipelines' --dry-run (the plan, budgets, what is reused, a rough estimate, nothing written) and
the --budget file: o2o demo's own file is accepted, a file for another task or with unknown keys is one
line that says which format --budget wants (issue #39, trap 5)."""

from __future__ import annotations

import re

import yaml

from o2o.cli import main
from o2o.presets import PRESET_DIR
from test_cli import one_error_line, run

DEMO = PRESET_DIR / "pipeline-demo.yaml"


def test_marvel_takes_the_demo_file_and_dry_run_prints_the_plan_without_writing(capsys, tmp_path):
    out = tmp_path / "mv"
    code, stdout, err = run(capsys, "--no-progress", "marvel", "--task", "BallCircle", "--budget", str(DEMO), "--dry-run", "--out", str(out))
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0] == f"plan for {out}/:"
    assert re.search(r"data\s+BallCircle-dsrl-small\s+exists", stdout)  # the file's dataset, offline_algo, methods, seeds
    assert sum("4,000 gradient steps of bc-safe" in x for x in lines) == 3
    assert sum(re.search(r"finetune\s+marvel-s\d\s+new .*from bc-safe-s\d; bridge 4,000 steps; 20 iterations", x) is not None for x in lines) == 3
    assert lines[-2].startswith("estimate: ~") and lines[-1] == "outputs: none written (dry run)"
    assert not out.exists()

    # the command line's options win over the file's: one seed, warm-start too
    code, stdout, _ = run(capsys, "--no-progress", "marvel", "--task", "BallCircle", "--budget", str(DEMO), "--dry-run", "--out", str(out),
                          "--seeds", "4", "--methods", "marvel,warm-start")
    assert code == 0 and "bc-safe-s4" in stdout and "warm-start-s4" in stdout and "marvel-s0" not in stdout


def test_dry_run_says_what_is_reused_and_extended(capsys, tmp_path):
    """Saved configs as the runs record them (resolved against the dataset; the fine-tuning runs with
    their pre-trained run's absolute path): the plan compares like with like."""
    from o2o.config import to_dict
    from o2o.data import load_hdf5
    from o2o.data.registry import resolve_dataset
    from o2o.loops.finetune import resolve_finetune_config
    from o2o.loops.offline import resolve_offline_config
    from o2o.presets import resolve_pretrain_config

    out = tmp_path / "mv"
    budget = yaml.safe_load(DEMO.read_text())
    data = load_hdf5(resolve_dataset(budget["dataset"]))
    planned = {s: to_dict(resolve_offline_config(resolve_pretrain_config("bc-safe", budget["dataset"], "BallCircle", s, layer=budget["pretrain"]), data)[0])
               for s in (0, 1, 2)}
    planned[1]["offline"]["steps"] //= 2  # a run finished at half the budget: extended
    planned[2]["agent"]["actor_lr"] *= 2  # a run of another config: the launch refuses it
    tuned = {s: to_dict(resolve_finetune_config("marvel", None, "BallCircle", s, layer=budget["finetune"], require_pretrained=False))
             for s in (0, 1)}
    for s, saved in tuned.items():  # a start the plan cannot load (config and summary only): compared by its path
        saved["pretrained"] = str((out / "pretrain" / f"bc-safe-s{s}").absolute())
    tuned[1]["lagrange"]["limit_margin"] = 0.1  # fine-tuned with another set point: refused
    for stage, saved_configs in (("pretrain", planned), ("finetune", tuned)):
        for seed, saved in saved_configs.items():
            run_dir = out / stage / f"{'bc-safe' if stage == 'pretrain' else 'marvel'}-s{seed}"
            run_dir.mkdir(parents=True)
            (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
            (run_dir / "summary.json").write_text("{}")
    code, stdout, err = run(capsys, "--no-progress", "marvel", "--task", "BallCircle", "--budget", str(DEMO), "--dry-run", "--out", str(out))
    assert code == 0, err
    cells = [re.split(r"\s{2,}", x.strip()) for x in stdout.splitlines() if x.startswith(("  pretrain", "  finetune"))]
    row = {c[1]: (c[2], float(c[3].lstrip("~ ").split()[0])) for c in cells}
    steps = planned[0]["offline"]["steps"]
    assert row["bc-safe-s0"] == ("finished: reused", 0.0)
    assert row["bc-safe-s1"][0] == f"finished at offline.steps={steps // 2}; extended to {steps}"
    assert row["bc-safe-s2"][0].startswith("REFUSED: holds another config (agent.actor_lr: ")
    assert row["marvel-s0"] == ("finished: reused", 0.0)
    assert row["marvel-s1"][0].startswith("REFUSED: holds another config (lagrange.limit_margin: 0.1 -> ")
    assert row["marvel-s2"][0] == "new"


def test_a_budget_file_for_another_task_or_with_unknown_keys_is_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "--no-progress", "marvel", "--task", "CarRun", "--budget", str(DEMO), "--dry-run", "--out", str(tmp_path / "x"))
    assert code == 2 and f"{DEMO} is a pipeline for task BallCircle, not --task CarRun" in one_error_line(err)
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain: {offline: {steps: 10}}\nmethod: marvel\n")
    code, _, err = run(capsys, "--no-progress", "marvel", "--task", "BallCircle", "--budget", str(bad), "--dry-run")
    line = one_error_line(err)
    assert code == 2 and f"{bad}: unknown key(s) ['method']" in line and "{data: ..., pretrain: ..., finetune: ...}" in line


def test_demo_and_ocr_dry_runs_write_nothing(capsys, tmp_path, monkeypatch):
    assert main(["--no-progress", "demo", "--dry-run", "--out", str(tmp_path / "demo")]) == 0
    assert "bc-safe-s2" in capsys.readouterr().out and not (tmp_path / "demo").exists()
    monkeypatch.setenv("O2O_DATA_DIR", str(tmp_path / "datasets"))  # no Hopper-medium: the plan generates it
    code, stdout, err = run(capsys, "--no-progress", "ocr", "--task", "Hopper", "--dry-run", "--out", str(tmp_path / "ocr"))
    assert code == 0, err
    assert re.search(r"data\s+Hopper-medium\s+new .*generated \(d4rl medium\)", stdout)
    assert re.search(r"pretrain\s+cql-s0\s+new", stdout) and re.search(r"finetune\s+o2sac-s0\s+new .*from cql-s0; bridge", stdout)
    assert not (tmp_path / "ocr").exists() and not (tmp_path / "datasets").exists()


def test_the_budget_file_names_the_task_so_the_issue_command_needs_no_task(capsys, tmp_path):
    """`o2o marvel --budget src/o2o/configs/pipeline-demo.yaml` as the issue typed it: the file's task is the default of --task."""
    out = tmp_path / "mv"
    code, stdout, err = run(capsys, "--no-progress", "marvel", "--budget", str(DEMO), "--dry-run", "--out", str(out))
    assert code == 0, err
    assert re.search(r"data\s+BallCircle-dsrl-small\s+exists", stdout) and "marvel-s2" in stdout and not out.exists()
    for command in ("marvel", "ocr"):  # neither --task nor a file naming one: one line
        code, _, err = run(capsys, "--no-progress", command, "--dry-run", "--out", str(out))
        assert code == 2 and f"o2o {command} needs --task (or a --budget file that names its task)" in one_error_line(err)
