"""Serving a service with uvicorn, and stopping it in an order that loses no job.

Plain uvicorn answers SIGTERM by closing its listening socket first, so /ready can never say
503 and a client about to send a job gets a refused connection instead of an answer. Here the
first SIGTERM (or SIGINT) starts a drain instead, while the socket stays open:

1. the app's lifecycle stops admitting work: /ready answers 503 "draining" and new jobs get 503
   with Retry-After;
2. jobs already admitted (running or queued) finish, for up to ``drain_timeout_s``; what is left
   after that is answered 503 ("shutting down") rather than cut off;
3. uvicorn then shuts down as usual (closes the socket, lets the last responses go out, runs the
   lifespan shutdown, which stops the workers), and the process exits 0.

A second signal ends the wait at once; a third skips the rest of the shutdown.

The same watcher ends a process whose workers have all been given up on (``exit_when_failed``):
it exits with ``EXIT_WORKERS_GAVE_UP`` so that the container's restart policy starts it afresh.
Docker never restarts a container for being unhealthy, and a service with no worker left would
otherwise answer 503 forever. When the workers were given up and at least one because its model
load was refused for its configuration (service_kit.models.refusals), it exits with
``EXIT_CONFIG_REFUSED`` (78, EX_CONFIG) instead, logging why: the refused worker fails the same
way after any restart, whatever the others' failures were.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from service_kit.app.state import Lifecycle, ServiceState
from service_kit.errors import MAX_RETRY_AFTER_S
from service_kit.http.stalled_connections import deadline_protocol
from service_kit.models.refusals import EXIT_CONFIG_REFUSED
from service_kit.settings import ServiceSettings

logger = logging.getLogger(__name__)

EXIT_WORKERS_GAVE_UP = 75  # EX_TEMPFAIL: every worker was given up on; a restart may help
RESPONSE_GRACE_S = 10  # after the drain: for the last responses to be written out
# An idle keep-alive connection stays open longer than any Retry-After the services send: a client
# that waits as told and reuses its connection must not race the server closing it (uvicorn's
# default is 5 s: a load test's clients, back after a 5 s Retry-After, saw ReadErrors).
KEEP_ALIVE_S = int(MAX_RETRY_AFTER_S) + 15
POLL_S = 0.1


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains the app before it closes its socket (see the module)."""

    def __init__(
        self,
        config: uvicorn.Config,
        app: FastAPI,
        *,
        drain_timeout_s: float,
        exit_when_failed: bool = True,
    ) -> None:
        super().__init__(config)
        self.app = app
        self.drain_timeout_s = drain_timeout_s
        self.exit_when_failed = exit_when_failed
        self.exit_code = 0
        self._stop_signal: int | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:  # noqa: ARG002
        # A signal handler: only flags here; the watcher acts on them. Unlike uvicorn's own,
        # it does not re-raise the signal afterwards, so a drained process exits 0.
        if self._stop_signal is None:
            self._stop_signal = sig
            return
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        watcher = asyncio.create_task(self._watch(), name="drain-watcher")
        try:
            await super().serve(sockets)
        finally:
            watcher.cancel()

    def _lifecycle(self) -> Lifecycle | None:
        """The app's dispatch, once its lifespan has set one up."""
        state: ServiceState[Any] | None = getattr(self.app.state, "service", None)
        return state.hosted if state is not None else None

    async def _watch(self) -> None:
        while not self.should_exit:
            await asyncio.sleep(POLL_S)
            try:
                if await self._check():
                    return
            except Exception:
                logger.exception("the drain watcher failed")
                if self._stop_signal is not None:  # still stop, if undrained
                    self.should_exit = True
                    return

    async def _check(self) -> bool:
        """One pass: drain and stop if a signal came, or stop if every worker was given up on.
        True once the server should exit."""
        lifecycle = self._lifecycle()
        if self._stop_signal is not None:
            logger.info("%s received", signal.Signals(self._stop_signal).name)
            await self._drain(lifecycle)
            self.should_exit = True
            return True
        if self.exit_when_failed and self.started and lifecycle and lifecycle.given_up():
            refusal = lifecycle.refusal()
            if refusal is not None:
                logger.error(
                    "no worker is left and a model load was refused for its configuration: %s; "
                    "exiting (code %d, configuration error): a restart will not help, fix the "
                    "configuration",
                    refusal,
                    EXIT_CONFIG_REFUSED,
                )
                self.exit_code = EXIT_CONFIG_REFUSED
            else:
                logger.error(
                    "every worker has been given up on; exiting (code %d) so that the service is "
                    "restarted",
                    EXIT_WORKERS_GAVE_UP,
                )
                self.exit_code = EXIT_WORKERS_GAVE_UP
            lifecycle.start_draining()
            lifecycle.fail_remaining()
            self.should_exit = True
            return True
        return False

    async def _drain(self, lifecycle: Lifecycle | None) -> None:
        if lifecycle is None:  # still starting: nothing was admitted
            logger.info("stop requested while starting")
            return
        lifecycle.start_draining()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout_s
        logger.info(
            "draining: %d job(s) in flight, waiting up to %.0fs",
            lifecycle.in_flight(),
            self.drain_timeout_s,
        )
        while lifecycle.in_flight() and loop.time() < deadline and not self.should_exit:
            await asyncio.sleep(POLL_S)
        left = lifecycle.in_flight()
        if left:
            logger.warning("drain over with %d job(s) unfinished; answering them 503", left)
        else:
            logger.info("drained: no job in flight")
        lifecycle.fail_remaining()


def serve(app: FastAPI, settings: ServiceSettings) -> int:
    """Run ``app`` until SIGTERM/SIGINT (drained) or until its workers are given up on;
    returns the process's exit code."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,
        timeout_graceful_shutdown=RESPONSE_GRACE_S,
        timeout_keep_alive=KEEP_ALIVE_S,
        # Deadlines on each request's headers and body (uvicorn has none): stalled clients
        # cannot hold connections.
        http=deadline_protocol(
            settings.header_timeout_s,
            settings.body_timeout_s,
            settings.write_timeout_s,
            int(settings.max_unread_answers_mb * 2**20),
        ),
    )
    server = DrainingServer(
        config,
        app,
        drain_timeout_s=settings.drain_timeout_s,
        exit_when_failed=settings.exit_when_failed,
    )
    server.run()
    return server.exit_code
