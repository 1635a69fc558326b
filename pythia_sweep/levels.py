"""The contrast's levels and its sign rule: the vocabulary a task file writes (`levels = [...]`) and the report reads.

Below every stage that uses it: a task checks its levels against these defaults, the analysis and the verdict
classify by them. A contrast runs from minus (the minus side specialises) to plus; a crossing is
`sign * value > strong`, a class is the size of |value| on the side it lies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

STRONG, MODERATE, WEAK = 0.5, 0.3, 0.1
LEVELS = (STRONG, MODERATE, WEAK)
SIDES = {1: "plus", -1: "minus"}  # the sign of a crossing -> the side of the contrast that specialises


@dataclass(frozen=True)
class Levels:
    """A contrast's strong / moderate / weak levels (points on the contrast's own scale) and its sign rule."""

    strong: float = STRONG
    moderate: float = MODERATE
    weak: float = WEAK

    @classmethod
    def of(cls, levels: Sequence[float]) -> Levels:
        return cls(*levels)

    def crosses(self, value: float, sign: int = 1) -> bool:
        """Past the strong level on the `sign` side: above +strong (sign +1) or below -strong (sign -1)."""
        return sign * value > self.strong

    def classify(self, value: float) -> tuple[str, int]:
        """(strong / moderate / weak / none, the side: +1 plus, -1 minus, 0 for none), by |value| on its side."""
        size = abs(value)
        klass = "strong" if size > self.strong else "moderate" if size > self.moderate else "weak" if size > self.weak else "none"
        return klass, 0 if klass == "none" else (1 if value > 0 else -1)

    def words(self, value: float) -> str:
        """The class in plain words: 'strong, plus side', 'below the weak level 0.1'."""
        klass, sign = self.classify(value)
        return f"below the weak level {self.weak:g}" if sign == 0 else f"{klass}, {SIDES[sign]} side"
