"""Where outputs may go, and which cases a previous run already finished (``--continue``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from .discovery import Case, input_fingerprint
from .manifest import CaseRecord, read_record
from .outputs import OutputSettings

__all__ = ["check_output_location", "finished_record", "settings_fingerprint"]


def check_output_location(inputs: Sequence[Path], output_dir: Path) -> None:
    """Refuse an output folder that is an input folder, lies inside one, or is the folder of an input file:
    outputs are never written next to or over the inputs.

    Raises:
        ValueError: naming both folders.
    """
    output_dir = output_dir.resolve()
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output {output_dir} exists and is not a folder.")
    for path in inputs:
        path = path.resolve()
        if path.is_dir() and (output_dir == path or path in output_dir.parents):
            raise ValueError(f"output folder {output_dir} is inside the input folder {path}: outputs are never "
                             "written next to or over the inputs; choose a folder outside it.")
        if path.is_file() and output_dir == path.parent:
            raise ValueError(f"output folder {output_dir} holds the input file {path.name}: outputs are never "
                             "written next to the inputs; choose another folder.")


def settings_fingerprint(case: Case, output: OutputSettings, channel_index: int, model: dict | None = None) -> str:
    """The input files' fingerprint plus everything that changes the outputs (output settings, channel, and
    ``model``: the weights' SHA-256 and the resolved inference settings): a "done" record counts for
    ``--continue`` only when all match."""
    settings = json.dumps({**asdict(output), "channel_index": channel_index, "model": model or {}}, sort_keys=True,
                          default=str)
    return hashlib.sha1(f"{input_fingerprint(case)}|{settings}".encode()).hexdigest()


def finished_record(case: Case, output_dir: Path, fingerprint: Callable[[Case], str]) -> CaseRecord | None:
    """The previous run's record of ``case`` when it finished with the same input and settings and all its outputs
    are still there; otherwise ``None`` (the case runs again; failed cases are always retried)."""
    record = read_record(output_dir, case.case_id)
    if record is None or record.status != "done" or record.fingerprint != fingerprint(case):
        return None
    if not all((output_dir / name).is_file() for name in record.outputs):
        return None
    return record
