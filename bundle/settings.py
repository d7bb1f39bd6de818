"""Config settings as they arrive from the command line, where ``monai.bundle run --name false`` passes the
*string* ``"false"`` (only ``False`` / ``True`` become booleans), which Python's ``bool()`` would read as true."""

from __future__ import annotations

from monai.utils import str2bool

__all__ = ["as_bool", "as_probability", "as_optional_probability"]


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


def _number(value: object) -> float:
    """``value`` (a number or its text) as a float; NaN for anything else, a bool included."""
    if isinstance(value, bool):
        return float("nan")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def as_probability(value: object, name: str) -> float:
    """``value`` of the setting ``name`` as a float strictly between 0 and 1 (a number or its text).

    Raises:
        ValueError: anything else (a bool included), naming the setting.
    """
    number = _number(value)
    if not 0.0 < number < 1.0:
        raise ValueError(f"setting {name!r} must be a probability strictly between 0 and 1, not {value!r}.")
    return number


def as_optional_probability(value: object, name: str) -> float:
    """``value`` of the setting ``name`` as a float in [0, 1), where 0 means "off" (a number or its text).

    Raises:
        ValueError: anything else (a bool included), naming the setting.
    """
    number = _number(value)
    if not 0.0 <= number < 1.0:
        raise ValueError(f"setting {name!r} must be a probability in [0, 1) (0 turns it off), not {value!r}.")
    return number
