"""Manifest files, merging of parts, the deterministic split and atomic writes."""

from __future__ import annotations

import csv
import json

import pytest

from bundle.fileio import atomic_path
from bundle.io import CaseRecord, discover_cases, merge_manifests, select_part, write_manifest
from bundle.io.manifest import manifest_name


def _record(case_id: str, status: str = "done") -> CaseRecord:
    return CaseRecord(case_id, f"/in/{case_id}.png", "image", status, [f"{case_id}_label.png"], lesion_voxels=3,
                      lesion_area_mm2=3.0, seconds=0.5, error="" if status == "done" else "why")


def test_manifest_csv_and_json_agree(tmp_path):
    write_manifest(tmp_path, [_record("b", "failed"), _record("a")])
    with open(tmp_path / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert [r["case_id"] for r in rows] == [r["case_id"] for r in data] == ["a", "b"]
    assert rows[1]["status"] == "failed" and rows[1]["error"] == "why" and rows[0]["outputs"] == "a_label.png"
    assert "fingerprint" not in rows[0]
    with pytest.raises(ValueError, match="status must be one of"):
        CaseRecord("x", "x", "image", "finished")


def test_merge_parts_and_report_missing(tmp_path):
    write_manifest(tmp_path, [_record("a"), _record("c")], manifest_name(3, 0))
    write_manifest(tmp_path, [_record("b", "failed")], manifest_name(3, 2))
    merged, problems = merge_manifests(tmp_path)
    assert sorted(r.case_id for r in merged) == ["a", "b", "c"]
    assert problems == [f"missing part manifest(s) for part id(s) [1] of 3 in {tmp_path}"]
    assert [r["case_id"] for r in json.loads((tmp_path / "manifest.json").read_text())] == ["a", "b", "c"]
    with pytest.raises(FileNotFoundError, match="no part manifests"):
        merge_manifests(tmp_path / "nowhere")


def test_split_is_deterministic_disjoint_and_complete(tmp_path):
    for i in range(7):
        (tmp_path / f"img{i}.png").write_bytes(b"")
    cases = discover_cases(tmp_path)
    parts = [select_part(cases, 3, i) for i in range(3)]
    ids = [c.case_id for part in parts for c in part]
    assert sorted(ids) == sorted(c.case_id for c in cases) and len(set(ids)) == 7
    assert [len(p) for p in parts] == [3, 2, 2]
    assert [c.case_id for c in select_part(list(reversed(cases)), 3, 1)] == [c.case_id for c in parts[1]]
    with pytest.raises(ValueError, match="part_id must be in"):
        select_part(cases, 3, 3)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "x_label.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.name.endswith(".nii.gz") and tmp.parent == target.parent
            tmp.write_bytes(b"partial")
            raise RuntimeError("disk full")
    assert list(target.parent.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"complete")
    assert [p.name for p in target.parent.iterdir()] == ["x_label.nii.gz"] and target.read_bytes() == b"complete"
