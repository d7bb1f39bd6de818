"""Config settings as they arrive from the command line, where ``monai.bundle run --name false`` passes the
*string* ``"false"`` (only ``False`` / ``True`` become booleans), which Python's ``bool()`` would read as true.
Standard library only, so every environment of the bundle (the MONAI Label one included) can import it."""

from __future__ import annotations

__all__ = ["as_bool"]

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def as_bool(value: object, name: str) -> bool:
    """``value`` of the setting ``name`` as a bool: a bool or 0 / 1 as such, and the strings true / false, yes / no,
    on / off, 1 / 0 in any case.

    Raises:
        ValueError: any other value, naming the setting (a typo never silently switches a step on).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError(f"setting {name!r} must be true or false, not {value!r}.")
