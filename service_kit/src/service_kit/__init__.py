"""Plumbing both editbench services share: errors, images, limits, probes, metrics, settings."""
