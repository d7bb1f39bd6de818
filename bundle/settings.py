"""Config settings as they arrive from the command line, where ``monai.bundle run --name false`` passes the
*string* ``"false"`` (only ``False`` / ``True`` become booleans), which Python's ``bool()`` would read as true."""

from __future__ import annotations

from monai.utils import str2bool

__all__ = ["as_bool"]


def as_bool(value: object, name: str) -> bool:
    """``value`` of the setting ``name`` as a bool, read by MONAI's ``str2bool`` (a bool as such; yes / true / t / y / 1
    and no / false / f / n / 0 in any case).

    Raises:
        ValueError: any other value, naming the setting (a typo never silently switches a step on).
    """
    try:
        return str2bool(value)
    except ValueError as err:
        raise ValueError(f"setting {name!r} must be true or false, not {value!r}.") from err
