"""``python -m editor_service``: read EDITOR_* settings and flags, serve with uvicorn.

SIGTERM drains first (service_kit.app.server): /ready says 503, admitted jobs finish, then exit 0.
"""

from __future__ import annotations

import sys

from editor_service.app import create_app
from editor_service.config import EditorSettings
from service_kit.app.server import serve
from service_kit.logs import configure_logging
from service_kit.settings import load_settings


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(EditorSettings, "python -m editor_service", argv)
    configure_logging(settings.log_level)
    sys.exit(serve(create_app(settings), settings))


if __name__ == "__main__":
    main()
