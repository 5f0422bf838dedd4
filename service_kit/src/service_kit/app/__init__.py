"""A service's app: factory, typed state, lifespan, probes, model routes, draining server."""
