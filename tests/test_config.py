"""Strict configs: every key and value that cannot be placed is a one-line ConfigError."""

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from o2o.config import (
    apply_overrides,
    config_help,
    diff_configs,
    from_dict,
    load_config,
    load_yaml,
    replace_path,
    to_dict,
    update_from_dict,
)
from o2o.errors import ConfigError


@dataclass(frozen=True)
class AgentConfig:
    actor_lr: float = field(default=3e-4, metadata={"help": "actor Adam learning rate"})
    critic_lr: float = field(default=3e-4, metadata={"help": "critic Adam learning rate"})
    hidden_dims: tuple[int, ...] = field(default=(256, 256), metadata={"help": "MLP widths"})
    backup: Literal["min", "mean"] = field(default="min", metadata={"help": "ensemble backup"})
    cost_limit: float | None = field(default=None, metadata={"help": "episode cost limit"})
    layer_norm: bool = field(default=False, metadata={"help": "LayerNorm in critics"})


@dataclass(frozen=True)
class TrainConfig:
    task: str = field(metadata={"help": "task id"})
    agent: AgentConfig = field(default_factory=lambda: AgentConfig(critic_lr=1e-3))
    iterations: int = field(default=100, metadata={"help": "training iterations"})
    seed: int = 0


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_from_dict_fills_defaults_and_converts_types():
    cfg = from_dict(
        TrainConfig,
        {"task": "hopper", "agent": {"actor_lr": "1e-4", "hidden_dims": [64, 32]}, "iterations": 5},
    )
    assert cfg.agent.actor_lr == 1e-4 and isinstance(cfg.agent.actor_lr, float)
    assert cfg.agent.hidden_dims == (64, 32)
    # a partial section fills in from the parent's default for it, not the section class's default
    assert cfg.agent.critic_lr == 1e-3
    assert cfg.iterations == 5 and cfg.seed == 0


def test_ints_accepted_for_floats_and_whole_floats_for_ints():
    cfg = from_dict(TrainConfig, {"task": "t", "agent": {"actor_lr": 1}, "iterations": "1e6"})
    assert cfg.agent.actor_lr == 1.0 and type(cfg.agent.actor_lr) is float
    assert cfg.iterations == 1_000_000 and type(cfg.iterations) is int


def test_pyyaml_reads_1e_minus_4_as_str_and_we_accept_it(tmp_path):
    p = tmp_path / "preset.yaml"
    p.write_text("task: hopper\nagent:\n  actor_lr: 1e-4\n")
    assert load_yaml(p)["agent"]["actor_lr"] == "1e-4"  # the PyYAML quirk this works around
    assert load_config(TrainConfig, p).agent.actor_lr == 1e-4


def test_unknown_key_suggests_the_close_one_and_lists_that_level():
    with pytest.raises(ConfigError) as err:
        from_dict(TrainConfig, {"task": "t", "agent": {"actr_lr": 1e-4}})
    msg = one_line(err)
    assert "unknown config key 'agent.actr_lr'" in msg
    assert "did you mean 'agent.actor_lr'?" in msg
    assert "actor_lr, critic_lr, hidden_dims, backup, cost_limit, layer_norm" in msg
    assert "iterations" not in msg  # only that level's keys


def test_wrong_type_names_key_expected_type_and_value():
    with pytest.raises(ConfigError) as err:
        from_dict(TrainConfig, {"task": "t", "agent": {"actor_lr": "abc"}})
    assert one_line(err) == "config key 'agent.actor_lr' expects float, got str 'abc'"

    with pytest.raises(ConfigError, match=r"'iterations' expects int, got float 1.5"):
        from_dict(TrainConfig, {"task": "t", "iterations": 1.5})
    with pytest.raises(ConfigError, match=r"'agent.layer_norm' expects bool, got int 1"):
        from_dict(TrainConfig, {"task": "t", "agent": {"layer_norm": 1}})
    with pytest.raises(ConfigError, match=r"'agent.actor_lr' expects float, got bool True"):
        from_dict(TrainConfig, {"task": "t", "agent": {"actor_lr": True}})
    with pytest.raises(ConfigError, match=r"'task' expects str, got int 3"):
        from_dict(TrainConfig, {"task": 3})
    with pytest.raises(ConfigError, match=r"'agent' expects a mapping \(section AgentConfig\), got list"):
        from_dict(TrainConfig, {"task": "t", "agent": [1]})


def test_literal_tuple_optional_and_required():
    with pytest.raises(ConfigError) as err:
        from_dict(TrainConfig, {"task": "t", "agent": {"backup": "max"}})
    assert "'agent.backup' expects one of 'min', 'mean', got str 'max'" in one_line(err)
    with pytest.raises(ConfigError, match=r"'agent.hidden_dims\[1\]' expects int, got str 'x'"):
        from_dict(TrainConfig, {"task": "t", "agent": {"hidden_dims": [1, "x"]}})
    with pytest.raises(ConfigError, match=r"'agent.hidden_dims' expects tuple\[int, \.\.\.\], got int 4"):
        from_dict(TrainConfig, {"task": "t", "agent": {"hidden_dims": 4}})
    assert from_dict(TrainConfig, {"task": "t", "agent": {"cost_limit": 25}}).agent.cost_limit == 25.0
    assert from_dict(TrainConfig, {"task": "t", "agent": {"cost_limit": None}}).agent.cost_limit is None
    with pytest.raises(ConfigError, match=r"config key 'task' is required"):
        from_dict(TrainConfig, {})
    with pytest.raises(ConfigError, match=r"must be a mapping"):
        from_dict(TrainConfig, ["task"])
    # `where` places a section's keys in the larger config
    with pytest.raises(ConfigError, match=r"config key 'agent.actor_lr' expects float"):
        from_dict(AgentConfig, {"actor_lr": "fast"}, where="agent")


def test_overrides_parse_yaml_values_then_typecheck():
    cfg = from_dict(TrainConfig, {"task": "hopper"})
    cfg = apply_overrides(
        cfg,
        [
            "agent.actor_lr=1e-4",
            "iterations=50",
            "agent.hidden_dims=[64,64,64]",
            "agent.backup=mean",
            "agent.layer_norm=true",
            "agent.cost_limit=10",
            "task=2024",  # a str field takes the raw text rather than failing on the int
        ],
    )
    assert cfg.agent.actor_lr == 1e-4
    assert cfg.iterations == 50
    assert cfg.agent.hidden_dims == (64, 64, 64)
    assert cfg.agent.backup == "mean" and cfg.agent.layer_norm is True
    assert cfg.agent.cost_limit == 10.0 and cfg.task == "2024"
    assert apply_overrides(cfg, ["agent.cost_limit=null"]).agent.cost_limit is None
    # a mapping merges into the section instead of resetting its other fields
    merged = apply_overrides(cfg, ["agent={critic_lr: 5e-4}"])
    assert merged.agent.critic_lr == 5e-4 and merged.agent.actor_lr == 1e-4


def test_override_errors():
    cfg = from_dict(TrainConfig, {"task": "t"})
    with pytest.raises(ConfigError) as err:
        apply_overrides(cfg, ["agent.actor_lr"])
    assert "override 'agent.actor_lr' is malformed; write key=value" in one_line(err)
    with pytest.raises(ConfigError, match=r"malformed"):
        apply_overrides(cfg, ["=3"])
    with pytest.raises(ConfigError, match=r"did you mean 'agent.actor_lr'"):
        apply_overrides(cfg, ["agent.actr_lr=1"])
    with pytest.raises(ConfigError, match=r"'iterations' expects int, got str 'many'"):
        apply_overrides(cfg, ["iterations=many"])
    with pytest.raises(ConfigError, match=r"'agent.layer_norm' expects bool, got int 1"):
        apply_overrides(cfg, ["agent.layer_norm=1"])
    with pytest.raises(ConfigError, match=r"'agent.actor_lr' is a value \(float\), not a section"):
        replace_path(cfg, "agent.actor_lr.x", 1)


def test_to_dict_round_trips_through_yaml():
    cfg = apply_overrides(from_dict(TrainConfig, {"task": "t"}), ["agent.actor_lr=1e-4"])
    d = to_dict(cfg)
    assert d["agent"]["hidden_dims"] == [256, 256]
    again = from_dict(TrainConfig, yaml.safe_load(yaml.safe_dump(d)))
    assert again == cfg


def test_update_from_dict_stacks_presets():
    base = from_dict(TrainConfig, {"task": "t", "agent": {"actor_lr": 1e-4}})
    cfg = update_from_dict(base, {"agent": {"critic_lr": 2e-4}, "seed": 3})
    assert (cfg.agent.actor_lr, cfg.agent.critic_lr, cfg.seed, cfg.task) == (1e-4, 2e-4, 3, "t")


def test_load_yaml_errors(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_yaml(tmp_path / "nope.yaml")
    assert "config file" in one_line(err) and "does not exist" in str(err.value)

    bad = tmp_path / "bad.yaml"
    bad.write_text("task: hopper\nagent:\n  actor_lr: [1, 2\n  critic_lr: 3\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(bad)
    assert "is not valid YAML" in one_line(err) and "line 4" in str(err.value)

    twice = tmp_path / "twice.yaml"
    twice.write_text("agent:\n  actor_lr: 1\n  critic_lr: 2\n  actor_lr: 3\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(twice)
    assert "key 'actor_lr' is given twice (first at line 2) at line 4" in one_line(err)

    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"must hold a mapping .* got list"):
        load_yaml(lst)

    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_yaml(empty) == {}


def test_load_config_names_the_file_in_errors(tmp_path):
    p = tmp_path / "preset.yaml"
    p.write_text("task: t\nagent:\n  actr_lr: 1\n")
    with pytest.raises(ConfigError, match=r"preset.yaml: unknown config key 'agent.actr_lr'"):
        load_config(TrainConfig, p)


def test_config_help_lists_every_leaf():
    rows = {row[0]: row for row in config_help(TrainConfig)}
    assert rows["agent.actor_lr"] == ("agent.actor_lr", "float", "0.0003", "actor Adam learning rate")
    assert rows["agent.hidden_dims"][1:3] == ("tuple[int, ...]", "[256, 256]")
    assert rows["agent.cost_limit"][1:3] == ("float | None", "null")
    assert rows["agent.backup"][1:3] == ("one of 'min', 'mean'", "min")
    assert rows["task"][2] == "(required)"
    assert "agent" not in rows  # sections are flattened into their leaves


def test_diff_configs():
    a = {"agent": {"actor_lr": 3e-4, "hidden": [256, 256], "flag": True}, "seed": 0}
    b = {"agent": {"actor_lr": 1e-4, "hidden": [256, 256], "flag": 1}, "iterations": 5, "seed": 0}
    assert diff_configs(a, b) == [
        "agent.actor_lr: 0.0003 -> 0.0001",
        "agent.flag: true -> 1",
        "iterations: (absent) -> 5",
    ]
    assert diff_configs(a, a) == []
    assert diff_configs({"x": float("nan")}, {"x": float("nan")}) == []


@pytest.mark.parametrize("key,value,expect", [
    ("agent.actor_lr", "0", "is a learning rate and must be > 0, got 0"),
    ("agent.critic_lr", "-3e-4", "is a learning rate and must be > 0, got -0.0003"),
    ("agent.gamma", "0", "is a discount factor and must be in (0, 1], got 0"),
    ("agent.gamma", "1.01", "is a discount factor and must be in (0, 1], got 1.01"),
    ("agent.tau", "0", "is a Polyak (target network) rate and must be in (0, 1], got 0"),
    ("agent.tau", "2", "is a Polyak (target network) rate and must be in (0, 1], got 2"),
    ("agent.batch_size", "0", "is a batch size and must be > 0, got 0"),
    ("agent.hidden_dims", "[256, 0]", "config key 'agent.hidden_dims[1]' is a layer width and must be > 0, got 0"),
    ("agent.cost_gamma", "-0.5", "is a discount factor and must be in (0, 1]"),
])
def test_values_a_setting_cannot_take_are_refused(key, value, expect):
    from o2o.presets import resolve_train_config

    with pytest.raises(ConfigError) as err:
        resolve_train_config("sac-lag", "BallCircle", overrides=[f"{key}={value}"])
    assert expect in str(err.value) and "\n" not in str(err.value)


def test_the_edges_of_the_ranges_are_accepted_and_a_yaml_file_is_checked_too(tmp_path):
    from o2o.presets import resolve_pretrain_config, resolve_train_config

    cfg = resolve_train_config("sac-lag", "BallCircle", overrides=["agent.gamma=1", "agent.tau=1", "agent.cost_gamma=null"])
    assert (cfg.agent.gamma, cfg.agent.tau, cfg.agent.cost_gamma) == (1.0, 1.0, None)
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent:\n  expectile: 1.0\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: config key 'agent.expectile' is an expectile and must be in \(0, 1\)"):
        resolve_pretrain_config("iql", "BallCircle-dsrl-small", config_file=str(bad))


def test_the_multiplier_section_belongs_to_safe_agents_only_and_old_configs_still_load(tmp_path, capsys):
    """`lagrange.*` is in the configs of the safe agents and the Marvel methods only; a run saved by an
    earlier o2o, which wrote it for every off-policy agent, still loads, resumes and reports."""
    import dataclasses

    from o2o.cli import main
    from o2o.config import to_dict
    from o2o.runconfig import finetune_config_class
    from o2o.runconfig import load_run_config, train_config_class

    names = lambda cls: {f.name for f in dataclasses.fields(cls)}
    assert "lagrange" in names(train_config_class("sac-lag")) and "lagrange" in names(finetune_config_class("marvel"))
    for cls in (train_config_class("sac"), train_config_class("td3"), finetune_config_class("o2sac"), finetune_config_class("o2td3")):
        assert "lagrange" not in names(cls)
    saved = {**to_dict(train_config_class("sac")()), "lagrange": {"controller": "apid", "kp": 0.1}}
    assert to_dict(load_run_config(train_config_class("sac"), saved)) == to_dict(train_config_class("sac")())
    with pytest.raises(ConfigError, match="bogus"):  # any other unknown section is still refused
        load_run_config(train_config_class("sac"), {**saved, "bogus": {}})
    # a tiny SAC run whose config.yaml has the section, as an earlier o2o wrote it: it resumes to a raised budget
    run = tmp_path / "run"
    tiny = ["agent.hidden_dims=[16]", "agent.batch_size=16", "online.iterations=1", "online.episodes_per_iteration=null",
            "online.steps_per_iteration=50", "online.updates_per_iteration=2", "online.eval_episodes=1"]
    assert main(["--no-progress", "train", "--algo", "sac", "--task", "Pendulum", "--out", str(run), *[x for kv in tiny for x in ("--set", kv)]]) == 0
    text = (run / "config.yaml").read_text()
    assert "lagrange" not in text
    (run / "config.yaml").write_text(text + yaml.safe_dump({"lagrange": to_dict(train_config_class("sac-lag")().lagrange)}))
    capsys.readouterr()
    assert main(["--no-progress", "train", "--resume", str(run), "--set", "online.iterations=2"]) == 0
    assert "lagrange" not in (run / "config.yaml").read_text()  # written back as this o2o reads it
    assert main(["--no-progress", "eval", str(run)]) == 0
