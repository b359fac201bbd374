"""Allowed ranges of params values, written beside each field as `Annotated[type, Range(...)]`.

`pipeline/core/params.py` checks a value against its range when the params file is loaded, so a negative
batch size or a ratio of 1.5 is one line naming the dotted key and the interval before any work starts,
never a traceback from deep inside a stage. Rules that tie several fields together live in the
dataclass's `__post_init__` and raise `ConfigError` with the field name first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any


class ConfigError(ValueError):
    """A params file does not match its schema; the message is one line naming the key."""


@dataclass(frozen=True)
class Range:
    """A closed or half-open interval; `None` leaves that side unbounded."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def admits(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = self.lo is None or (value > self.lo if self.lo_open else value >= self.lo)
        below = self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)
        return above and below

    def describe(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '≥'} {self.lo:g}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '≤'} {self.hi:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"

    def check(self, value: Any, where: str) -> None:
        if not self.admits(value):
            raise ConfigError(f"{where}: must be {self.describe()}, got {value!r}")


PositiveInt = Annotated[int, Range(lo=1)]
NonNegativeInt = Annotated[int, Range(lo=0)]
PositiveFloat = Annotated[float, Range(lo=0, lo_open=True)]
NonNegativeFloat = Annotated[float, Range(lo=0)]
UnitInterval = Annotated[float, Range(0, 1)]  # probabilities and fractions, both ends allowed
DropRate = Annotated[float, Range(0, 1, hi_open=True)]  # 1 would drop everything
Factor = Annotated[float, Range(0, 1, lo_open=True)]  # a multiplier that shrinks but never zeroes
OpenFraction = Annotated[float, Range(0, 1, lo_open=True, hi_open=True)]  # strictly inside a run
CodebookSize = Annotated[int, Range(lo=2)]  # one code carries no information


def power_of_two(value: int) -> bool:
    return value >= 1 and value & (value - 1) == 0
