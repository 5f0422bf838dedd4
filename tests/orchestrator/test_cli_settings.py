"""The CLI fills one typed RunSettings: each flag sets the field of its name, a flag left out
never hides a config file or EDITBENCH_* value, and what a run saved shows which won."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.config import RunSettings
from orchestrator.jobs import EditSettings
from tests.support.images import image_bytes

# Flags of `editbench run` that are not settings of a run (or set two: --size).
NOT_SETTINGS = {"resume", "size", "strict", "config", "verbose"}
DOWN = "http://127.0.0.1:9"  # nothing listens: the run stops at its pre-flight check


def test_every_run_flag_is_a_setting_of_the_same_name() -> None:
    command = get_command(app)
    assert isinstance(command, typer.core.TyperGroup)
    run = command.commands["run"]
    names = {param.name for param in run.params if param.name}
    assert names - NOT_SETTINGS <= set(RunSettings.model_fields)
    # and the other way: every setting has a flag but the API keys (never on a command line)
    # and the size (--size WxH)
    assert set(RunSettings.model_fields) - names == {
        "editor_api_key",
        "reward_api_key",
        "width",
        "height",
    }


def _run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    out = tmp_path / "run"
    out.mkdir()  # made beforehand: a refused run removes only a folder it made itself
    result = CliRunner().invoke(
        app,
        ["run", "--out", str(out), "--editor-url", DOWN, "--reward-url", DOWN, *args],
        env={"EDITBENCH_READY_TIMEOUT_S": "0", **(env or {})},
    )
    assert result.exit_code == 1, result.output  # services down, after run.json was written
    saved: dict[str, object] = json.loads((out / "run.json").read_text(encoding="utf-8"))
    return saved


@pytest.mark.parametrize(
    ("config", "env", "flags", "steps"),
    [
        ("steps = 7\n", {}, [], 7),
        ("steps = 7\n", {}, ["--steps", "9"], 9),
        ("", {"EDITBENCH_STEPS": "5"}, [], 5),
        ("steps = 7\n", {"EDITBENCH_STEPS": "5"}, [], 5),
        ("", {"EDITBENCH_STEPS": "5"}, ["--steps", "3"], 3),
        ("", {}, [], None),  # the editor family's default
    ],
)
def test_a_flag_wins_and_an_absent_flag_hides_nothing(
    small_benchmark: Path,
    tmp_path: Path,
    config: str,
    env: dict[str, str],
    flags: list[str],
    steps: int | None,
) -> None:
    path = tmp_path / "editbench.toml"
    path.write_text(config, encoding="utf-8")
    saved = _run(tmp_path, "-b", str(small_benchmark), "--config", str(path), *flags, env=env)
    identity = saved["identity"]
    assert isinstance(identity, dict)
    assert identity["steps"] == steps


def test_repeated_and_comma_separated_categories_make_one_list(
    small_benchmark: Path, tmp_path: Path
) -> None:
    saved = _run(tmp_path, "-b", str(small_benchmark), "-c", "color,removal", "-c", "物理")
    selection = saved["selection"]
    assert isinstance(selection, dict)
    assert selection["categories"] == ["color", "removal", "物理"]


def test_a_relative_benchmark_is_the_same_from_a_flag_or_a_config_file(
    small_benchmark: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(small_benchmark.parent.parent)
    relative = str(small_benchmark.relative_to(small_benchmark.parent.parent))
    by_flag = RunSettings.model_validate({"benchmark": relative})
    by_file = RunSettings.model_validate({"benchmark": Path(relative)})
    assert by_flag.benchmark == by_file.benchmark == str(small_benchmark.resolve())
    assert RunSettings.model_validate({"benchmark": "sample"}).benchmark == "sample"


def test_steps_and_cfg_get_their_wire_names_in_one_place() -> None:
    settings = EditSettings(steps=12, cfg=2.5, seed_policy="fixed", seed=3)
    request = settings.request("item", image_bytes(8, 8, seed=0), "make it red")
    assert (request.num_inference_steps, request.true_cfg_scale, request.seed) == (12, 2.5, 3)
    # Everything but the item's own content (its images and instruction) is the settings'.
    assert settings.parameters(3).model_dump() == request.model_dump(
        exclude={"image", "images", "instruction"}
    )
