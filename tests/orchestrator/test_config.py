"""Settings precedence: CLI > EDITBENCH_* environment > config file > run folder > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import ConfigError, resolve_settings


def test_defaults_point_at_local_services() -> None:
    settings = resolve_settings({}, environ={})
    assert settings.editor_url == "http://127.0.0.1:8001"
    assert settings.reward_url == "http://127.0.0.1:8002"
    # Steps and CFG left to the editor family (Qwen-Image-Edit: 50 and 4.0; Kontext: 28, none).
    assert (settings.steps, settings.cfg, settings.params, settings.protocol, settings.mode) == (
        None,
        None,
        {},
        "viescore",
        "expected",
    )


def test_family_parameters_come_as_name_value_pairs_from_flags_env_and_file(
    tmp_path: Path,
) -> None:
    flags = resolve_settings({"params": ["guidance_scale=2.5", "true_cfg_scale=1"]}, environ={})
    assert flags.params == {"guidance_scale": 2.5, "true_cfg_scale": 1.0}
    assert flags.edit_settings().parameters(None).parameters == flags.params
    env = resolve_settings({}, environ={"EDITBENCH_PARAMS": "guidance_scale=3"})
    assert env.params == {"guidance_scale": 3.0}
    config = tmp_path / "editbench.toml"
    config.write_text("[editbench.params]\nguidance_scale = 4.5\n", encoding="utf-8")
    assert resolve_settings({}, environ={}, config_file=config).params == {"guidance_scale": 4.5}
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        resolve_settings({"params": ["guidance_scale"]}, environ={})


def test_cli_beats_env_beats_file(tmp_path: Path) -> None:
    config = tmp_path / "editbench.toml"
    config.write_text(
        '[editbench]\neditor_url = "http://file:1"\nreward_url = "http://file:2"\nsteps = 8\n'
        'categories = ["物理"]\n',
        encoding="utf-8",
    )
    env = {"EDITBENCH_EDITOR_URL": "http://env:1", "EDITBENCH_STEPS": "", "OTHER": "x"}
    settings = resolve_settings({"steps": 2}, environ=env, config_file=config)
    assert settings.editor_url == "http://env:1"
    assert settings.reward_url == "http://file:2"
    assert settings.steps == 2
    assert settings.categories == ["物理"]


def test_yaml_config_and_env_named_config(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("reward-url: http://judge:9\ncategories: color, 物理\n", encoding="utf-8")
    settings = resolve_settings({}, environ={"EDITBENCH_CONFIG": str(config)})
    assert settings.reward_url == "http://judge:9"
    assert settings.categories == ["color", "物理"]


def test_unknown_config_keys_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("stpes = 3\n")
    with pytest.raises(ConfigError, match=r"unknown setting.*stpes"):
        resolve_settings({}, environ={}, config_file=config)


def test_invalid_values_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="steps"):
        resolve_settings({}, environ={"EDITBENCH_STEPS": "many"})


def test_an_unknown_config_key_close_to_a_setting_is_named_with_it(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[editbench]\nstep = 3\nreward_ur = 'http://j:1'\nzzz = 1\n")
    with pytest.raises(ConfigError) as refused:
        resolve_settings({}, environ={}, config_file=config)
    assert "reward_ur (did you mean reward_url?), step (did you mean steps?), zzz" in str(
        refused.value
    )


def test_an_invalid_value_says_where_it_was_given(tmp_path: Path) -> None:
    """A value the user gave long ago (an exported variable, a config file) is found at once."""
    config = tmp_path / "c.toml"
    config.write_text("[editbench]\nsteps = 'two'\n")
    cases = [
        ({"steps": "x"}, {}, None, "invalid setting steps (--steps): "),
        ({"width": 100, "height": 96}, {}, None, "invalid setting width (--size): "),
        ({}, {"EDITBENCH_STEPS": "many"}, None, "invalid setting steps (EDITBENCH_STEPS): "),
        ({}, {}, config, f"invalid setting steps (config file {config}): "),
    ]
    for cli, environ, config_file, message in cases:
        with pytest.raises(ConfigError) as refused:
            resolve_settings(cli, environ=environ, config_file=config_file)
        assert str(refused.value).startswith(message), str(refused.value)


def test_a_run_folder_supplies_its_settings_and_refuses_others() -> None:
    saved = resolve_settings({"benchmark": "sample", "steps": 2}, environ={}).identity()
    resumed = resolve_settings({}, environ={}, saved_identity=saved)
    assert (resumed.benchmark, resumed.steps) == ("sample", 2)
    # URLs, categories and concurrency may change between invocations...
    moved = resolve_settings(
        {"editor_url": "http://gpu:8001", "categories": ["物理"]}, environ={}, saved_identity=saved
    )
    assert moved.steps == 2
    # ...what a job is may not.
    with pytest.raises(ConfigError, match="steps: the run folder has 2, you asked for 8"):
        resolve_settings({"steps": 8}, environ={}, saved_identity=saved)


def test_a_resume_keeps_the_saved_selection_unless_given_again() -> None:
    first = resolve_settings({"benchmark": "sample", "limit_per_category": 1}, environ={})
    saved = {**first.selection(), **first.identity()}
    assert resolve_settings({}, environ={}, saved_identity=saved).limit_per_category == 1
    widened = resolve_settings({"limit_per_category": 3}, environ={}, saved_identity=saved)
    assert widened.limit_per_category == 3
