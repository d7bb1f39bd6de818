"""The run's record: one row per case, as ``manifest.csv`` and ``manifest.json``, and merging of parts.

Each finished case also gets a small JSON record in ``<output>/.records/`` the moment its outputs are written;
``--continue`` trusts those, so a crashed or killed run loses at most the cases in flight. A run split with
``--num-parts N --part-id I`` writes ``manifest_part{I}-of-{N}.{csv,json}``; :func:`merge_manifests` joins them.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .writers import atomic_path

__all__ = ["CaseRecord", "RECORDS_DIR", "write_record", "read_record", "write_manifest", "merge_manifests",
           "manifest_name"]

RECORDS_DIR = ".records"
STATUSES = ("done", "failed", "ignored")
_PART = re.compile(r"^manifest_part(\d+)-of-(\d+)\.json$")


@dataclass
class CaseRecord:
    """One manifest row. ``status``: "done", "failed" or "ignored" (not an image; does not fail the run).
    ``outputs`` are relative to the output folder; lesion size is from the real spacing (area for a 2D image,
    volume for a volume); ``fingerprint`` identifies the input version a "done" record belongs to."""

    case_id: str
    input: str
    kind: str
    status: str
    outputs: list[str] = field(default_factory=list)
    shape: str = ""
    spacing: str = ""
    lesion_voxels: int | None = None
    lesion_area_mm2: float | None = None
    lesion_volume_ml: float | None = None
    seconds: float = 0.0
    error: str = ""
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}.")

    @classmethod
    def from_dict(cls, data: dict) -> CaseRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def manifest_name(num_parts: int = 1, part_id: int = 0) -> str:
    """File stem of the manifest of one part (``manifest`` when the run is not split)."""
    return "manifest" if num_parts == 1 else f"manifest_part{part_id}-of-{num_parts}"


def _write_json(path: Path, data: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_record(output_dir: str | os.PathLike, record: CaseRecord) -> None:
    """Store one case's record (atomically) for ``--continue`` and for the manifest."""
    _write_json(Path(output_dir) / RECORDS_DIR / f"{record.case_id}.json", asdict(record))


def read_record(output_dir: str | os.PathLike, case_id: str) -> CaseRecord | None:
    """The stored record of ``case_id``, or ``None`` when there is none or it cannot be read."""
    path = Path(output_dir) / RECORDS_DIR / f"{case_id}.json"
    try:
        return CaseRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def write_manifest(output_dir: str | os.PathLike, records: list[CaseRecord], name: str = "manifest") -> Path:
    """Write ``<name>.csv`` and ``<name>.json`` (rows sorted by case id); returns the CSV path."""
    output_dir = Path(output_dir)
    rows = [asdict(r) for r in sorted(records, key=lambda r: r.case_id)]
    _write_json(output_dir / f"{name}.json", rows)
    columns = [f.name for f in fields(CaseRecord) if f.name != "fingerprint"]
    with atomic_path(output_dir / f"{name}.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "outputs": ";".join(row["outputs"])})
    return output_dir / f"{name}.csv"


def merge_manifests(output_dir: str | os.PathLike) -> tuple[list[CaseRecord], list[str]]:
    """Join the part manifests in ``output_dir`` into ``manifest.csv`` / ``manifest.json``.

    Returns:
        (records, problems): problems name missing parts, parts of different splits, and duplicated cases.

    Raises:
        FileNotFoundError: no part manifest in ``output_dir``.
    """
    output_dir = Path(output_dir)
    parts = {int(m[1]): (int(m[2]), p) for p in sorted(output_dir.glob("manifest_part*-of-*.json"))
             if (m := _PART.match(p.name))}
    if not parts:
        raise FileNotFoundError(f"no part manifests (manifest_part<I>-of-<N>.json) in {output_dir}.")
    problems = []
    totals = {n for n, _ in parts.values()}
    if len(totals) > 1:
        problems.append(f"part manifests of different splits in {output_dir}: N = {sorted(totals)}")
    expected = max(totals)
    missing = sorted(set(range(expected)) - set(parts))
    if missing:
        problems.append(f"missing part manifest(s) for part id(s) {missing} of {expected} in {output_dir}")
    records: dict[str, CaseRecord] = {}
    for part_id in sorted(parts):
        for row in json.loads(parts[part_id][1].read_text(encoding="utf-8")):
            record = CaseRecord.from_dict(row)
            if record.case_id in records:
                problems.append(f"case {record.case_id} appears in more than one part ({parts[part_id][1].name})")
            records[record.case_id] = record
    merged = list(records.values())
    write_manifest(output_dir, merged)
    return merged, problems
