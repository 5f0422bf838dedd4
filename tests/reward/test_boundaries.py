"""The reward API process stays free of the model stack until the backend loads."""

from __future__ import annotations

import subprocess
import sys

HEAVY = {"torch", "transformers", "torchvision"}


def modules_after(code: str) -> set[str]:
    program = f"import sys\n{code}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


def test_importing_the_reward_app_does_not_import_torch() -> None:
    assert not modules_after("import reward_service.app, reward_service.__main__") & HEAVY


def test_creating_the_app_and_picking_the_backend_does_not_import_torch() -> None:
    code = (
        "from reward_service.app import create_app\n"
        "from reward_service.backends.factory import make_backend\n"
        "from reward_service.config import RewardSettings\n"
        "settings = RewardSettings(devices=['cpu'])\n"
        "create_app(settings)\n"
        "make_backend(settings.backend_spec())"
    )
    assert not modules_after(code) & HEAVY
