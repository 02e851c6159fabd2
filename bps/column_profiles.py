"""Column profiles of an uploaded dataset (name, dtype, kind, missing, n_unique, non_finite,
min/max/mean/std of the finite values, integral), shown on the dataset's detail."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bps.numbers import finite_or_none


def _finite_stats(values: np.ndarray) -> dict[str, float | None]:
    """min/max/mean/std of the finite values, computed on values scaled by their largest
    magnitude so that numbers near the float64 maximum do not overflow; None if unrepresentable."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"min": None, "max": None, "mean": None, "std": None}
    scale = float(np.abs(finite).max()) or 1.0
    scaled = finite / scale
    with np.errstate(over="ignore", invalid="ignore"):
        return {
            "min": float(finite.min()),
            "max": float(finite.max()),
            "mean": finite_or_none(scaled.mean() * scale),
            "std": finite_or_none(scaled.std() * scale),
        }


def profile_values(name: str, values: Any, dtype_name: str) -> dict[str, Any]:
    """One column's profile: missing counts NaN/null, non_finite counts +-inf too."""
    series = pd.Series(np.asarray(values).ravel()) if not isinstance(values, pd.Series) else values
    numeric = pd.api.types.is_numeric_dtype(series.dtype)
    entry: dict[str, Any] = {"name": name, "dtype": dtype_name, "kind": "numeric" if numeric else "string"}
    entry["missing"] = int(series.isna().sum())
    entry["n_unique"] = int(series.nunique(dropna=True))
    if numeric:
        array = series.to_numpy(dtype=np.float64, na_value=np.nan)
        entry["non_finite"] = int((~np.isfinite(array)).sum())
        entry.update(_finite_stats(array))
        finite = array[np.isfinite(array)]
        entry["integral"] = bool(np.all(finite == np.round(finite)))
    else:
        entry.update({"non_finite": entry["missing"], "min": None, "max": None, "mean": None, "std": None})
        entry["integral"] = False
    return entry


def _distinct_counts(block: np.ndarray) -> np.ndarray:
    """n_unique of each column of `block` (NaN not counted, as pandas' nunique)."""
    ordered = np.sort(block, axis=0)  # NaN sorts last
    valid = ~np.isnan(ordered) if ordered.dtype.kind == "f" else np.ones(ordered.shape, bool)
    changes = (ordered[1:] != ordered[:-1]) & valid[1:]
    return changes.sum(axis=0) + valid.any(axis=0)


def _block_profiles(names: list[str], block: np.ndarray) -> list[dict[str, Any]]:
    """profile_values of same-dtype numeric columns at once: one NumPy pass per statistic
    over the block instead of a dozen pandas calls per column (wide files)."""
    values = block.astype(np.float64)
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    scale = np.where(finite, np.abs(values), 0.0).max(axis=0, initial=0.0)
    scale[scale == 0] = 1.0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        scaled = np.where(finite, values / scale, 0.0)
        mean = scaled.sum(axis=0) / count
        std = np.sqrt(np.where(finite, (scaled - mean) ** 2, 0.0).sum(axis=0) / count)
        stats = {"min": np.where(finite, values, np.inf).min(axis=0, initial=np.inf),
                 "max": np.where(finite, values, -np.inf).max(axis=0, initial=-np.inf),
                 "mean": mean * scale, "std": std * scale}
    integral = np.where(finite, values == np.round(values), True).all(axis=0)
    missing, n_unique = np.isnan(values).sum(axis=0), _distinct_counts(block)
    dtype_name = _dtype_name(block.dtype)
    return [{"name": name, "dtype": dtype_name, "kind": "numeric", "missing": int(missing[k]),
             "n_unique": int(n_unique[k]), "non_finite": int(len(values) - count[k]),
             **{stat: finite_or_none(column[k]) if count[k] else None for stat, column in stats.items()},
             "integral": bool(integral[k])} for k, name in enumerate(names)]


def _text_block_profiles(names: list[str], block: np.ndarray) -> list[dict[str, Any]]:
    """profile_values of string columns at once (block: object values, NaN/None missing)."""
    missing = pd.isna(block)
    return [{"name": name, "dtype": "string", "kind": "string", "missing": int(missing[:, k].sum()),
             "n_unique": len(set(block[~missing[:, k], k])), "non_finite": int(missing[:, k].sum()),
             "min": None, "max": None, "mean": None, "std": None, "integral": False}
            for k, name in enumerate(names)]


def profile_frame(frame: pd.DataFrame, block_values: int = 1 << 22) -> list[dict[str, Any]]:
    """Every column's profile. Columns are taken by dtype, in blocks of about `block_values`
    values, and profiled by NumPy over the block: a pandas call per column costs far more,
    and superlinearly, on wide files. Other dtypes (nullable integers, dates) column by column."""
    by_dtype: dict[Any, list[int]] = {}
    for position, dtype in enumerate(frame.dtypes):
        by_dtype.setdefault(dtype, []).append(position)
    profiles: dict[int, dict[str, Any]] = {}
    step = max(1, block_values // max(1, len(frame)))
    for dtype, positions in by_dtype.items():
        numeric = isinstance(dtype, np.dtype) and dtype.kind in "biuf"
        selected = frame.select_dtypes(include=[dtype]) if numeric or pd.api.types.is_string_dtype(dtype) else None
        if selected is None or selected.shape[1] != len(positions):
            for position in positions:
                column = frame.iloc[:, position]
                profiles[position] = profile_values(str(frame.columns[position]), column, _dtype_name(dtype))
            continue
        profile_block = _block_profiles if numeric else _text_block_profiles
        for start in range(0, len(positions), step):
            chunk = positions[start:start + step]
            whole = start == 0 and step >= len(positions)  # slicing a wide frame costs more than the profile
            block = selected.to_numpy() if whole else selected.iloc[:, start:start + step].to_numpy()
            profiles.update(zip(chunk, profile_block([str(frame.columns[p]) for p in chunk], block)))
    return [profiles[position] for position in range(frame.shape[1])]


def _dtype_name(dtype: Any) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_numeric_dtype(dtype):
        return str(dtype)
    return "string"
