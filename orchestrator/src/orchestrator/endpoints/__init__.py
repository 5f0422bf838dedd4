"""Several endpoints of one service, used as one client: capacity, least-loaded choice, set-aside.

- `urls`: the URLs given, and the endpoints a name resolves to;
- `balancing`: each endpoint's health and capacity, the least-loaded choice, the set-aside;
- `pooled`: the pooled clients the phases use as one;
- `opening`: the clients of a run, built from its settings.


``--editor-url`` and ``--reward-url`` take several URLs (comma-separated). A URL whose host name
resolves to several addresses (Swarm's ``tasks.<service>``, a Kubernetes headless Service) is one
endpoint per address, and the name is resolved again every `EndpointSet.resolve_interval_s`, so
replicas that come and go are used. Each endpoint's weight comes from its /v1/info (the editor's
ready workers, the judge's devices); each call goes to the ready endpoint with the fewest calls in
flight per unit of weight. An endpoint that stops answering, or answers 502/503 (restarting,
draining, not ready), is set aside and probed again later with a growing pause; the call that
failed is retried on another endpoint by the phase's usual retry (`EndpointFailed` does not
pause the whole service the way a failure of its only endpoint does). The phase writes each job's
record once, whichever endpoint answered, so no record is lost or doubled.

Every endpoint must serve the same model (id and revision, what job ids are made of): a set that
mixes them is refused at the start unless ``allow_mixed_revisions``; a replica that turns up later
with another model is not used. `PooledEditorClient` and `PooledRewardClient` are drop-in
`EditorClient`/`RewardClient`s: the phases do not know how many endpoints stand behind them.
"""
