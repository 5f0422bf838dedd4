"""What both editbench services stand on, as small libraries:

- ``http``: the HTTP edge (API keys, body limits, client identity and fair order, JSON bodies off
  the loop, cancel on disconnect, stalled connections, HTTP metrics);
- ``images``: decoding client images safely (structure checks, decoding, the decode gate);
- ``replicas``: the replica runtime (worker processes, the replica set, the worker side);
- ``models``: worker-side model helpers (sources, loading, dtypes, devices, determinism, OOM,
  the backend spec and what a loaded model reports);
- ``app``: a service's app built from them (factory, typed state, lifespan, probes, model
  hand-over routes, the draining server).

``errors`` (domain errors and their one mapping to HTTP), ``settings``, ``logs`` and
``text_safety`` are shared by all of them.
"""
