"""The HTTP edge both services share: keys, limits, client identity, bodies, disconnects."""
