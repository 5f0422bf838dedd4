"""A model load refused for its configuration: no restart can fix it.

A backend raises a `ConfigurationRefused` (or a subclass: the editor's ``UnsupportedOption``, the
judge's ``InvalidOption``) from its constructor or ``load`` when a setting cannot be honoured as
set: a value that is not one of its choices or of the wrong type, FP8 on a CPU worker, an option
the model's family does not have, a model that is no folder or hub id, a backend class that
cannot be imported, a judge endpoint URL that is not http(s). Every configuration error is one
of these, never a plain ValueError or RuntimeError (which would be restarted as transient). The
worker runtime reports it as final and exits with ``EXIT_CONFIG_REFUSED``; the supervisor then
gives the replica up at once instead of restarting it with back-off, and a service left with no
replica, at least one of them refused so, exits with the same code (service_kit.app.server).
"""

from __future__ import annotations

import sys

# sysexits.h EX_CONFIG: a configuration error; a restart with the same configuration will not help.
EXIT_CONFIG_REFUSED = 78


class ConfigurationRefused(ValueError):
    """A model load refused for how it is configured (see the module docstring)."""


def refused_at_start(message: str) -> SystemExit:
    """The exit of a service refused before it serves (invalid settings, a protocol file that
    does not load): ``message`` is written to stderr now and the process exits
    ``EXIT_CONFIG_REFUSED``, like a service whose model loads were refused. ``str()`` of the
    exit is the message."""
    sys.stderr.write(message + "\n")
    refused = SystemExit(message)
    refused.code = EXIT_CONFIG_REFUSED
    return refused
