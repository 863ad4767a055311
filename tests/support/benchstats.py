"""Figures for the benchmarks: the spread of several rounds, and how loaded the machine was."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence


def spread(values: Sequence[float], fmt: str = ",.0f") -> str:
    """`min a / median b / max c` of the rounds' values."""
    return (f"min {min(values):{fmt}} / median {statistics.median(values):{fmt}} / "
            f"max {max(values):{fmt}}")


def load() -> str:
    """The 1, 5 and 15 minute load averages and the number of cores, for the report."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"
