"""Auth never fails open (issue 31, class 5): API keys that are set but hold no key once parsed
(`` , ``, blanks, an empty secret file) stop the service at start with a clear message naming
the variable (never its value, no traceback), on both services; and the log says whether
authentication is on. Real service processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.services import PREFIX, SERVICES, service_process
from tests.support.servers import REPO_ROOT, free_port, offline_env


@pytest.mark.parametrize("module", SERVICES)
@pytest.mark.parametrize("value", [" , ", ",", "   ", ",,, ,\t,"])
def test_keys_set_but_empty_after_parsing_stop_the_service_at_start(
    module: str, value: str
) -> None:
    prefix = PREFIX[module]
    env = offline_env(**{f"{prefix}_API_KEYS": value, f"{prefix}_DEVICES": "cpu"})
    done = subprocess.run(
        [sys.executable, "-m", module, "--port", str(free_port())],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert f"{prefix}_API_KEYS" in output and "hold no key" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("module", SERVICES)
def test_an_empty_secret_file_stops_the_service_too(module: str, tmp_path: Path) -> None:
    from service_kit.settings import load_settings

    settings_class = {
        "editor_service": "editor_service.config:EditorSettings",
        "reward_service": "reward_service.config:RewardSettings",
    }[module]
    module_name, class_name = settings_class.split(":")
    cls = getattr(__import__(module_name, fromlist=[class_name]), class_name)
    (tmp_path / f"{PREFIX[module].lower()}_api_keys").write_text(" , \n")
    with pytest.raises(SystemExit, match="hold no key"):
        load_settings(cls, module, [], secrets_dir=tmp_path)


@pytest.mark.parametrize("module", SERVICES)
@pytest.mark.parametrize("keys", ["", "one-key-1234"])
def test_the_log_says_whether_authentication_is_on(module: str, keys: str, tmp_path: Path) -> None:
    settings = {"API_KEYS": keys} if keys else {}
    service = service_process(module, tmp_path, **settings)
    with service.running(ready_timeout_s=120):
        pass
    log = service.log()
    if keys:
        assert "authentication on (1 API key(s))" in log
        assert "one-key-1234" not in log
    else:
        assert "authentication OFF" in log
