"""``python -m reward_service``: read REWARD_* settings and flags, serve with uvicorn.

SIGTERM drains first (service_kit.app.server): /ready says 503, admitted requests finish, then exit
0.
"""

from __future__ import annotations

import sys

from reward_service.app import create_app
from reward_service.config import RewardSettings
from reward_service.protocols import ProtocolFileError
from service_kit.app.server import serve
from service_kit.logs import configure_logging
from service_kit.models.refusals import refused_at_start
from service_kit.settings import load_settings


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(RewardSettings, "python -m reward_service", argv)
    configure_logging(settings.log_level)
    try:
        app = create_app(settings)
    except ProtocolFileError as exc:  # a user's protocol file: say which and why, no traceback
        raise refused_at_start(f"reward_service: {exc}") from None
    sys.exit(serve(app, settings))


if __name__ == "__main__":
    main()
