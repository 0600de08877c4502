"""Headroom: warn before a cloud instance runs out of CPU."""

__version__ = "0.1.0"

METRICS: tuple[str, ...] = ("cpu", "memory", "network_in", "network_out")
"""The metric keys stored in ``samples.metric``; ``cpu`` is the target, the others are inputs."""
