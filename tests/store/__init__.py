"""Tests of the store package, one file per module; shared rows and times."""

T0 = 1_760_000_000 // 300 * 300


def cpu_rows(instance: str, n: int, start: int = T0, value: float = 10.0) -> list[tuple[str, str, int, float]]:
    """``n`` CPU samples of one instance, five minutes apart, rising by one from ``value``."""
    return [(instance, "cpu", start + 300 * k, value + k) for k in range(n)]
