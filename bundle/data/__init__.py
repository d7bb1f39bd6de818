"""Dataset discovery, datalists and the synthetic demo data."""

from __future__ import annotations

from . import datalist, synthetic

__all__ = ["datalist", "synthetic"]
