"""The replica runtime both services share: worker processes, the replica set, the worker side."""
