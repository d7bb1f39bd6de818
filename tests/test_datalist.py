"""Datalists: layouts, seeded splits by patient / case, and path resolution."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bundle.data.datalist import (
    build_datalist,
    detect_layout,
    find_cases,
    load_datalist,
    select_splits,
    split_cases,
)
from bundle.data.synthetic import write_synthetic_lgg


def test_busi_layout_split_is_seeded_and_stratified(synthetic_busi):
    assert detect_layout(synthetic_busi) == "busi"
    a = build_datalist(synthetic_busi, seed=3)
    b = build_datalist(synthetic_busi, seed=3)
    assert a == b
    ids = [c["case_id"] for split in ("training", "validation", "test") for c in a[split]]
    assert sorted(ids) == sorted(c.case_id for c in find_cases(synthetic_busi))
    assert len(set(ids)) == len(ids)
    classes = {split: {c["case_id"].split("_")[0] for c in a[split]} for split in ("validation", "test")}
    assert classes["validation"] == {"benign"} and classes["test"] == {"benign"}  # 2 normals: all in training


def test_lgg_split_keeps_a_patient_in_one_split(tmp_path):
    root = write_synthetic_lgg(tmp_path / "lgg", n_cases=4, shape=(16, 16, 2))
    for i, src in enumerate(sorted(root.glob("SYN_*_image.nii.gz"))):  # two studies of each of two patients
        case = f"TCGA_AB_{1000 + i // 2}_2000010{i % 2}"
        src.rename(root / f"{case}_image.nii.gz")
        (root / src.name.replace("_image", "_label")).rename(root / f"{case}_label.nii.gz")
    cases = find_cases(root, "lgg")
    assert {c.group for c in cases} == {"TCGA_AB_1000", "TCGA_AB_1001"}
    for seed in range(5):
        splits = split_cases(cases, (0.5, 0.5, 0.0), seed)
        groups = [{c.group for c in splits[s]} for s in splits]
        assert all(not (g1 & g2) for i, g1 in enumerate(groups) for g2 in groups[i + 1 :])


def test_kvasir_layout(tmp_path):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
        for i in range(5):
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / sub / f"cju{i}.jpg")
    assert detect_layout(tmp_path) == "kvasir"
    datalist = build_datalist(tmp_path)
    assert sum(len(datalist[s]) for s in ("training", "validation", "test")) == 5
    assert datalist["training"][0]["label"].startswith("masks/")


def test_missing_pair_and_unknown_layout_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no known layout"):
        detect_layout(tmp_path)
    (tmp_path / "benign").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "benign" / "benign_1_mask.png")
    with pytest.raises(ValueError, match="benign_1.png"):
        find_cases(tmp_path)


def test_load_datalist_builds_once_and_rebuilds_for_another_folder(synthetic_busi, tmp_path):
    path = tmp_path / "datalist.json"
    data = load_datalist(path, synthetic_busi)
    assert path.is_file() and data["training"][0]["image"].startswith(str(synthetic_busi.resolve()))
    written = json.loads(path.read_text())
    other = write_synthetic_lgg(tmp_path / "lgg", n_cases=3, shape=(16, 16, 2))
    rebuilt = load_datalist(path, other)
    assert json.loads(path.read_text()) != written
    assert all(item["image"].endswith("_image.nii.gz") for item in rebuilt["training"])


def test_inference_datalist_skips_labels_and_non_images(synthetic_busi, synthetic_lgg, tmp_path):
    from bundle.io.discovery import datalist_of

    found = datalist_of(synthetic_busi)
    assert found and all("_mask" not in item["image"] for item in found)
    volumes = datalist_of(synthetic_lgg)
    assert volumes and all(item["image"].endswith("_image.nii.gz") for item in volumes)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datalist_of(synthetic_busi / "nope")
    (tmp_path / "notes.txt").write_text("no image")
    with pytest.raises(ValueError, match="holds no image to segment"):
        datalist_of(tmp_path)


def test_select_splits_concatenates_in_order_and_names_unknown_splits(caplog):
    data = {"training": [{"case_id": "a"}, {"case_id": "b"}], "validation": [{"case_id": "c"}], "test": []}
    assert select_splits(data, "training") == data["training"]
    with caplog.at_level("WARNING"):
        both = select_splits(data, ["training", "validation"])
    assert [item["case_id"] for item in both] == ["a", "b", "c"]
    assert "model_final.pt" in caplog.text  # training on validation says which weights to take
    with pytest.raises(ValueError, match=r"no split \['tset'\].*'test'"):
        select_splits(data, ["training", "tset"])
    with pytest.raises(ValueError, match="empty"):
        select_splits(data, [])
