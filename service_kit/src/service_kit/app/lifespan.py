"""One lifespan for both services' apps.

The lifespan resolves the devices (off the event loop: it may ask a subprocess how many GPUs
torch sees), lets the service build its dispatch over them (the editor's pool, the judge's
batcher and replicas), publishes it in the app's state (service_kit.app.state) to the routes,
the probes, the model routes and the draining server, starts it, and on shutdown drains and
stops it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

from service_kit.app.state import Hosted, service_state
from service_kit.settings import ModelServiceSettings

logger = logging.getLogger(__name__)


def replica_lifespan(
    settings: ModelServiceSettings,
    service: str,
    build: Callable[[list[str]], Hosted],
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: ``build(devices)`` makes the service's dispatch; it is started here
    and stopped at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        devices = await asyncio.to_thread(settings.resolve_devices)
        logger.info("%s: model %s on %s", service, settings.model, ", ".join(devices))
        keys = sum(1 for key in settings.api_keys if key.get_secret_value().strip())
        if keys:
            logger.info("%s: authentication on (%d API key(s))", service, keys)
        else:
            logger.warning(
                "%s: authentication OFF: no API key is set, every route is open to anyone who "
                "can reach this port",
                service,
            )
        hosted = build(devices)
        state = service_state(app)
        state.hosted = hosted
        await hosted.start()
        try:
            yield
        finally:
            await hosted.stop(settings.drain_timeout_s)

    return lifespan
