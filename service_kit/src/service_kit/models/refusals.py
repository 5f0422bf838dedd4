"""A model load refused for its configuration: no restart can fix it.

A backend raises a `ConfigurationRefused` (or a subclass: the editor's ``UnsupportedOption``, the
judge's ``InvalidOption``) from ``load`` when an option cannot be honoured as set: a value that is
not one of its choices, FP8 on a CPU worker, an option the model's family does not have. The
worker runtime reports it as final and exits with ``EXIT_CONFIG_REFUSED``; the supervisor then
gives the replica up at once instead of restarting it with back-off, and a service whose every
replica was refused so exits with the same code (service_kit.app.server).
"""

from __future__ import annotations

# sysexits.h EX_CONFIG: a configuration error; a restart with the same configuration will not help.
EXIT_CONFIG_REFUSED = 78


class ConfigurationRefused(ValueError):
    """A model load refused for how it is configured (see the module docstring)."""
