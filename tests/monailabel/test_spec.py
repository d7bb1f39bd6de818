"""What the MONAI Label app serves, read from the bundle (main environment, no server)."""

from __future__ import annotations

import json
import shutil

import pytest

from bundle.monailabel.spec import is_2d_image, label_names, model_specs, split_items, training_items

from .helpers import ROOT


def test_models_follow_the_bundle_tasks(tmp_path):
    specs = model_specs(ROOT, tmp_path / "out")
    assert list(specs) == ["lmnet_lgg", "lmnet_lgg3d", "lmnet_busi", "lmnet_kvasir"]
    lgg, busi = specs["lmnet_lgg"], specs["lmnet_busi"]
    assert [p.relative_to(ROOT).as_posix() for p in specs["lmnet_lgg3d"].inference_configs] == [
        "configs/inference.json", "configs/lgg3d/inference.json"]
    assert specs["lmnet_lgg3d"].weights == ROOT / "models" / "lgg3d" / "model.pt"  # none shipped: not served
    assert [p.relative_to(ROOT).as_posix() for p in lgg.inference_configs] == ["configs/inference.json"]
    assert [p.relative_to(ROOT).as_posix() for p in busi.inference_configs] == [
        "configs/inference.json", "configs/busi/inference.json"]
    assert [p.relative_to(ROOT).as_posix() for p in busi.train_configs] == [
        "configs/train.json", "configs/busi/train.json"]
    assert lgg.weights == ROOT / "models" / "model.pt"
    assert busi.weights == ROOT / "models" / "busi" / "model.pt"
    assert busi.finetuned == (tmp_path / "out" / "lmnet_busi" / "model.pt").resolve()
    assert (lgg.dimension, busi.dimension) == (3, 2)
    assert lgg.labels == busi.labels == {"lesion": 1}
    assert list(model_specs(ROOT, tmp_path, ["busi"])) == list(model_specs(ROOT, tmp_path, ["lmnet_busi"]))
    with pytest.raises(ValueError, match="unknown task"):
        model_specs(ROOT, tmp_path, ["liver"])


def test_label_names_need_a_channel_def(tmp_path):
    (tmp_path / "configs").mkdir()
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["outputs"]["pred"]["channel_def"] = {"0": "background", "1": "Edema", "2": "core"}
    (tmp_path / "configs" / "metadata.json").write_text(json.dumps(meta))
    assert label_names(tmp_path) == {"edema": 1, "core": 2}
    del meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    (tmp_path / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="metadata.json: the first output has no channel_def"):
        label_names(tmp_path)


def test_missing_config_names_the_file(tmp_path):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    (tmp_path / "configs" / "train.json").unlink()
    with pytest.raises(FileNotFoundError, match="train.json does not exist"):
        model_specs(tmp_path, tmp_path / "out")


def test_training_items_by_dimension():
    datalist = [
        {"image": "/s/b.nii.gz", "label": "/s/labels/final/b.nii.gz"},
        {"image": "/s/c.PNG", "label": "/s/labels/final/c.png"},
        {"image": "/s/a.nrrd", "label": "/s/labels/final/a.nrrd"},
        {"image": "/s/d.png", "label": ""},
    ]
    assert [d["image"] for d in training_items(datalist, 3)] == ["/s/a.nrrd", "/s/b.nii.gz"]
    assert [d["image"] for d in training_items(datalist, 2)] == ["/s/c.PNG"]
    assert is_2d_image("x.jpeg") and not is_2d_image("x.nii")


@pytest.mark.parametrize(
    "n, val_split, sizes",
    [(1, 0.2, (1, 1)), (2, 0.2, (1, 1)), (2, 0.5, (1, 1)), (10, 0.2, (8, 2)), (5, 0.9, (1, 4)), (4, 0.0, (4, 4))],
)
def test_split_items(n, val_split, sizes):
    items = [{"image": str(i)} for i in range(n)]
    train, val = split_items(items, val_split)
    assert (len(train), len(val)) == sizes
    if n > 1 and val_split > 0:
        assert train + val == items
    with pytest.raises(ValueError, match="val_split"):
        split_items(items, 1.0)
