"""Numbers as JSON can carry them."""
from __future__ import annotations

import math
from typing import Any


def finite_or_none(value: Any) -> float | None:
    """A JSON-safe float: None, NaN and the infinities become None (the API answers null)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
