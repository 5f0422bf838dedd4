"""Every configuration error of the judge's backends is a refusal (final: the replica is given up
at once and the service exits 78, tests/service_kit/test_refused_loads.py), never an error a
restart would retry. Each names the setting to fix and never echoes a secret."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reward_service.backends.base import BackendSpec, InvalidOption, option_flag
from reward_service.backends.factory import make_backend
from reward_service.backends.hf.loading import attention_option
from reward_service.backends.openai_endpoint import OPTION, EndpointConfig
from reward_service.backends.transformers_backend import preprocess_device_option
from reward_service.config import RewardSettings
from service_kit.models.refusals import EXIT_CONFIG_REFUSED, ConfigurationRefused
from tests.support.servers import offline_env

PASSWORD = "pw-9f8e7d6c5b4a"


def openai_spec(model: str = "gpt-4.1", **options: Any) -> BackendSpec:
    return BackendSpec("openai", model, None, "auto", "/tmp", options)


def endpoint(**config: Any) -> dict[str, Any]:
    return {OPTION: EndpointConfig(**{"base_url": "http://judge.test/v1", **config})}


def test_the_openai_backend_without_a_base_url_is_refused_naming_the_setting() -> None:
    with pytest.raises(InvalidOption, match="REWARD_OPENAI_BASE_URL"):
        make_backend(openai_spec())


def test_the_openai_backend_without_a_model_name_is_refused_naming_the_setting() -> None:
    with pytest.raises(InvalidOption, match="REWARD_MODEL"):
        make_backend(openai_spec(" ", **endpoint()))


@pytest.mark.parametrize(
    "base_url", ["judge.test:8000/v1", "ftp://judge.test/v1", "http:///v1", "http://h:port/v1"]
)
def test_a_base_url_that_is_not_an_http_url_is_refused_without_echoing_it(base_url: str) -> None:
    with pytest.raises(InvalidOption, match="REWARD_OPENAI_BASE_URL must be an http") as caught:
        make_backend(openai_spec(**endpoint(base_url=base_url.replace("judge", PASSWORD))))
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "setting"),
    [
        ("max_concurrency", "8", "REWARD_OPENAI_MAX_CONCURRENCY"),
        ("max_concurrency", 0, "REWARD_OPENAI_MAX_CONCURRENCY"),
        ("max_retries", 1.5, "REWARD_OPENAI_MAX_RETRIES"),
        ("max_answer_bytes", True, "REWARD_OPENAI_MAX_ANSWER_BYTES"),
        ("timeout_s", 0, "REWARD_OPENAI_TIMEOUT_S"),
        ("timeout_s", "120", "REWARD_OPENAI_TIMEOUT_S"),
        ("connect_timeout_s", float("nan"), "REWARD_OPENAI_CONNECT_TIMEOUT_S"),
    ],
)
def test_an_endpoint_option_of_the_wrong_kind_or_range_is_refused_naming_it(
    field: str, value: object, setting: str
) -> None:
    with pytest.raises(InvalidOption, match=setting):
        make_backend(openai_spec(**endpoint(**{field: value})))


def test_a_key_file_that_cannot_be_read_refuses_the_load(tmp_path: Path) -> None:
    judge = make_backend(openai_spec(**endpoint(api_key_file=tmp_path / "absent")))
    with pytest.raises(InvalidOption, match="REWARD_OPENAI_API_KEY_FILE: cannot read"):
        judge.load("cpu")


def test_the_settings_refuse_an_openai_judge_without_a_model_or_with_a_bad_url() -> None:
    with pytest.raises(ValueError, match="needs REWARD_MODEL"):
        RewardSettings(backend="openai", openai_base_url="http://judge.test/v1")
    with pytest.raises(ValueError, match="REWARD_OPENAI_BASE_URL must be an http"):
        RewardSettings(backend="openai", model="gpt-4.1", openai_base_url="judge.test/v1")
    named = RewardSettings(backend="openai", model="tiny", openai_base_url="http://judge.test/v1")
    assert named.model == "tiny"  # named on purpose: an endpoint may serve a model so called


@pytest.mark.parametrize("value", ["maybe", "ture", 2, None, [True]])
def test_an_on_off_option_that_is_neither_is_refused_not_read_as_off(value: object) -> None:
    with pytest.raises(InvalidOption, match=r"prefix_buckets must be true or false"):
        option_flag({"prefix_buckets": value}, "prefix_buckets", True)


@pytest.mark.parametrize(
    ("value", "read"), [("off", False), (" Yes ", True), (0, False), (True, True), ("1", True)]
)
def test_on_off_options_read_json_booleans_numbers_and_words(value: object, read: bool) -> None:
    assert option_flag({"prefix_buckets": value}, "prefix_buckets", not read) is read
    assert option_flag({}, "prefix_buckets", read) is read


def test_a_preprocess_device_that_is_not_one_of_its_choices_is_refused() -> None:
    assert preprocess_device_option({}) == "auto"
    for choice in ("auto", "model", "cpu"):
        assert preprocess_device_option({"preprocess_device": choice}) == choice
    with pytest.raises(InvalidOption) as refused:
        preprocess_device_option({"preprocess_device": "gpu"})
    for choice in ("'auto'", "'model'", "'cpu'", "not 'gpu'"):
        assert choice in str(refused.value)


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ("tranformers", "backend must be 'transformers', 'openai' or 'module:Class'"),
        ("no_such_module_here:Judge", "module 'no_such_module_here' cannot be imported"),
        ("tests.support.fake_judges:NoSuchJudge", "has no class 'NoSuchJudge'"),
    ],
)
def test_a_backend_setting_that_names_no_backend_is_refused(backend: str, message: str) -> None:
    with pytest.raises(ConfigurationRefused, match=message):
        make_backend(BackendSpec(backend, "tiny", None, "auto", "/tmp"))


def test_a_model_that_is_no_folder_hub_id_or_builtin_is_refused_when_the_backend_is_built() -> None:
    spec = BackendSpec("transformers", "../judges/missing", None, "auto", "/tmp")
    with pytest.raises(ConfigurationRefused, match="is not a folder, a Hugging Face id"):
        make_backend(spec)


def test_a_dtype_that_torch_does_not_have_is_refused_before_the_weights_load() -> None:
    spec = BackendSpec("transformers", "tiny", None, "float65", "/nonexistent-cache")
    with pytest.raises(ConfigurationRefused, match="dtype must be auto or a torch dtype"):
        make_backend(spec).load("cpu")


def _start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reward_service", "--port", "0"],
        env=offline_env(REWARD_CACHE_DIR=str(tmp_path / "cache"), **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_openai_judge_without_a_base_url_stops_the_service_at_once_with_78(
    tmp_path: Path,
) -> None:
    out = _start(tmp_path, REWARD_BACKEND="openai", REWARD_MODEL="gpt-4.1")
    assert out.returncode == EXIT_CONFIG_REFUSED  # not 1, and no worker restarted
    assert "cannot start, invalid settings" in out.stderr
    assert "REWARD_OPENAI_BASE_URL" in out.stderr and "Traceback" not in out.stderr


def test_a_protocol_file_that_does_not_load_stops_the_service_with_78(tmp_path: Path) -> None:
    protocols = tmp_path / "protocols"
    protocols.mkdir()
    (protocols / "mine.yaml").write_text("name: [\n")
    out = _start(tmp_path, REWARD_PROTOCOLS_DIR=str(protocols), REWARD_LOAD_ON_START="false")
    assert out.returncode == EXIT_CONFIG_REFUSED
    assert "mine.yaml" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("value", ["flash", "flash-attention-2", 2])
def test_an_attention_transformers_does_not_have_is_refused_before_the_model_is_built(
    value: object,
) -> None:
    assert attention_option({}) == "sdpa"
    assert attention_option({"attn_implementation": "kernels-community/flash-attn3"})
    with pytest.raises(InvalidOption, match="attn_implementation must be one of eager, "):
        attention_option({"attn_implementation": value})


@pytest.mark.tiny
def test_an_attention_whose_package_is_missing_is_refused_for_its_configuration(
    model_cache: Path,
) -> None:
    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here: nothing is missing")
    options = {"attn_implementation": "flash_attention_2"}
    spec = BackendSpec("transformers", "tiny", None, "auto", str(model_cache), options)
    with pytest.raises(InvalidOption, match="needs a package this environment lacks"):
        make_backend(spec).load("cpu")


def test_a_hub_model_missing_from_the_cache_while_offline_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Offline as every test runs (tests/conftest.py), said here; an empty cache.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = BackendSpec("transformers", "nobody-editbench/absent-judge", None, "auto", "/tmp")
    with pytest.raises(ConfigurationRefused, match=r"not in the model cache .* HF_HUB_OFFLINE"):
        make_backend(spec).load("cpu")
