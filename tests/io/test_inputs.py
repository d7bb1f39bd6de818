"""Inputs as users have them: symbolic links (files, folders, the input itself, dangling ones) and the kinds of bad or
unusual input that must give one clear manifest row each while the batch goes on. Every file is written here."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from bundle.predictor import Predictor
from scripts import predict
from tests.io.helpers import phantom, small_segmenter, write_mr_series, write_oblique_nifti

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MPEG2 = UID("1.2.840.10008.1.2.4.100")  # MPEG2 Main Profile / Main Level: video, no decoder for it here


@pytest.fixture(scope="module")
def segmenter():
    return small_segmenter()


def _rows(output: Path) -> dict[str, dict]:
    with open(output / "manifest.csv", newline="") as handle:
        return {row["case_id"]: row for row in csv.DictReader(handle)}


def _labels(output: Path) -> dict[str, bytes]:
    return {p.name: np.asarray(nib.load(p).dataobj).tobytes() for p in sorted(output.glob("*_label.nii.gz"))}


def test_symlinked_files_folders_and_input_give_the_outputs_of_real_files(segmenter, tmp_path):
    real = tmp_path / "real"
    write_oblique_nifti(real / "a.nii.gz", seed=1)
    write_oblique_nifti(real / "sub" / "b.nii.gz", seed=2)
    expected_dir = tmp_path / "out_real"
    Predictor(segmenter, formats=("nifti",), quiet=True).predict_folder(real, expected_dir)
    expected = _labels(expected_dir)
    assert set(expected) == {"a_label.nii.gz", "sub__b_label.nii.gz"}

    links = tmp_path / "links"
    links.mkdir()
    (links / "first.nii.gz").symlink_to(real / "a.nii.gz")  # a linked file, under its own name
    (links / "sub").symlink_to(real / "sub", target_is_directory=True)  # a linked folder
    out = tmp_path / "out_links"
    records = Predictor(segmenter, formats=("nifti",), quiet=True).predict_folder(links, out)
    assert all(r.status == "done" for r in records)
    got = _labels(out)
    assert got == {"first_label.nii.gz": expected["a_label.nii.gz"],
                   "sub__b_label.nii.gz": expected["sub__b_label.nii.gz"]}
    rows = _rows(out)
    assert rows["first"]["input"] == str(links / "first.nii.gz")  # the path as given, not the link's target

    linked_input = tmp_path / "input_link"
    linked_input.symlink_to(real, target_is_directory=True)  # --input itself a link
    out2 = tmp_path / "out_input_link"
    assert predict.main(["--input", str(linked_input), "--output", str(out2), "--formats", "nifti", "--quiet",
                         "--set", "ckpt_path=None", "--roi_size", "[32,32]", "--tta_flips", "[]"]) == 0
    assert {p.name for p in out2.glob("*_label.nii.gz")} == set(expected)
    assert all(row["input"].startswith(str(linked_input)) for row in _rows(out2).values())


def test_dangling_link_is_one_failed_row_and_the_batch_goes_on(segmenter, tmp_path):
    inp = tmp_path / "in"
    write_oblique_nifti(inp / "good.nii.gz")
    (inp / "gone.nii.gz").symlink_to(tmp_path / "deleted.nii.gz")
    records = {r.case_id: r for r in Predictor(segmenter, formats=("nifti",), quiet=True).predict_folder(
        inp, tmp_path / "out")}
    assert records["good"].status == "done"
    assert records["gone"].status == "failed" and "dangling symbolic link" in records["gone"].error
    assert str(tmp_path / "deleted.nii.gz") in records["gone"].error


def _write_compressed(path: Path, syntax: UID, seed: int = 0) -> None:
    """One 8-bit MR slice stored with transfer syntax ``syntax`` (encoded by pydicom, Pillow or not at all)."""
    series = write_mr_series(path.parent / f"tmp_{path.name}", rows=24, cols=20, slices=1, seed=seed)
    ds = pydicom.dcmread(series.files[0])
    pixels = (ds.pixel_array // 8).clip(0, 255).astype(np.uint8)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = pixels.tobytes()
    if syntax in (RLELossless, JPEGLSLossless):
        ds.compress(syntax)
    elif syntax in (JPEGBaseline8Bit, JPEG2000Lossless):
        buffer = io.BytesIO()
        kind = "JPEG" if syntax == JPEGBaseline8Bit else "JPEG2000"
        options = {"quality": 95} if kind == "JPEG" else {"irreversible": False, "no_jp2": True}
        Image.fromarray(pixels).save(buffer, format=kind, **options)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
    else:
        ds.PixelData = encapsulate([b"\x00" * 64])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    for f in series.files:
        f.unlink()
    series.files[0].parent.rmdir()


@pytest.fixture(scope="module")
def bad_batch(segmenter, tmp_path_factory):
    """A folder with one input of every troublesome kind, run once through the predictor."""
    root = tmp_path_factory.mktemp("bad")
    inp = root / "in"
    inp.mkdir()
    nan = phantom((20, 24, 3), 0).astype(np.float32)
    nan[3, 4, 1] = np.nan
    nan[5, 6, 2] = np.inf
    nib.save(nib.Nifti1Image(nan, np.eye(4)), inp / "nan.nii.gz")
    timeseries = nib.Nifti1Image(np.stack([phantom((20, 24, 3), t) for t in range(5)], -1).astype(np.int16), np.eye(4))
    timeseries.header.set_xyzt_units("mm", "sec")
    timeseries.header["pixdim"][4] = 2.0
    nib.save(timeseries, inp / "fmri.nii.gz")
    Image.fromarray(phantom((30, 26), 1).astype(np.uint16) * 10).save(inp / "sixteen.png")
    Image.fromarray(np.stack([phantom((28, 22), 2) // 8] * 3, -1).clip(0, 255).astype(np.uint8)).save(inp / "rgb.png")
    Image.fromarray((phantom((1500, 1400), 3) // 8).clip(0, 255).astype(np.uint8)).save(inp / "large.png")
    huge = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4))
    huge.header.set_data_shape((4096, 4096, 4096))
    with open(inp / "huge.nii", "wb") as handle:  # a header promising 68 G voxels, no data behind it
        handle.write(huge.header.binaryblock + b"\x00" * 4)
    for syntax, name in ((RLELossless, "rle"), (JPEGLSLossless, "jpegls"), (JPEG2000Lossless, "j2k"),
                         (JPEGBaseline8Bit, "jpeg"), (MPEG2, "mpeg2")):
        _write_compressed(inp / f"dicom_{name}" / "slice.dcm", syntax)
    enhanced = write_mr_series(inp / "dup", slices=3, seed=4)
    dup = pydicom.dcmread(enhanced.files[2])
    dup.ImagePositionPatient = pydicom.dcmread(enhanced.files[1]).ImagePositionPatient  # two slices at one place
    dup.save_as(enhanced.files[2], enforce_file_format=True)
    (inp / "notes.txt").write_text("not an image")
    (inp / "table.csv").write_text("a,b\n1,2\n")
    out = root / "out"
    records = {r.case_id: r for r in Predictor(segmenter, formats=("nifti", "png"), quiet=True).predict_folder(
        inp, out)}
    return records, out


@pytest.mark.parametrize("case_id,status,reason", [
    ("nan", "failed", "NaN or infinite"),
    ("fmri", "failed", "4D NIfTI with a time axis (5 time points, 2 sec apart)"),
    ("huge", "failed", "too large: shape (4096, 4096, 4096)"),
    ("sixteen", "done", ""),
    ("rgb", "done", ""),
    ("large", "done", ""),
    ("notes", "ignored", "not DICOM and not an image type"),
    ("table", "ignored", "not DICOM and not an image type"),
])
def test_each_bad_kind_gets_its_row(bad_batch, case_id, status, reason):
    records, _ = bad_batch
    record = records[case_id]
    assert record.status == status, record.error
    assert reason in record.error


@pytest.mark.parametrize("name", ["rle", "jpegls", "j2k", "jpeg"])
def test_compressed_dicom_is_decoded(bad_batch, name):
    records, _ = bad_batch
    (record,) = [r for cid, r in records.items() if cid.startswith(f"dicom_{name}__")]
    assert record.status == "done", record.error


def test_undecodable_syntax_is_named(bad_batch):
    records, _ = bad_batch
    (record,) = [r for cid, r in records.items() if cid.startswith("dicom_mpeg2__")]
    assert record.status == "failed"
    assert "MPEG2" in record.error and "1.2.840.10008.1.2.4.100" in record.error


def test_duplicate_slice_positions_fail_naming_the_files(bad_batch):
    records, _ = bad_batch
    (record,) = [r for cid, r in records.items() if cid.startswith("dup__")]
    assert record.status == "failed" and "share a position" in record.error


def test_large_image_keeps_its_size_and_non_images_are_counted(bad_batch):
    records, out = bad_batch
    (name,) = [o for o in records["large"].outputs if o.endswith("_label.png")]
    assert np.asarray(Image.open(out / name)).shape == (1500, 1400)
    assert sum(r.status == "ignored" for r in records.values()) == 2


def test_cli_exit_code_is_1_when_a_case_failed(tmp_path):
    inp = tmp_path / "in"
    write_oblique_nifti(inp / "ok.nii.gz")
    bad = phantom((12, 12, 2), 0).astype(np.float32)
    bad[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(bad, np.eye(4)), inp / "bad.nii.gz")
    code = predict.main(["--input", str(inp), "--output", str(tmp_path / "out"), "--formats", "nifti", "--quiet",
                         "--set", "ckpt_path=None", "--roi_size", "[32,32]", "--tta_flips", "[]"])
    assert code == 1
    assert {row["case_id"]: row["status"] for row in _rows(tmp_path / "out").values()} == {"ok": "done",
                                                                                          "bad": "failed"}
    assert os.path.isfile(tmp_path / "out" / "ok_label.nii.gz")


SMALL = {"network_def": {"_target_": "bundle.networks.LMNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
                         "features": [8, 16, 16, 32, 32], "lft_heads": 2, "gft_heads": 8},
         "roi_size": [32, 32], "tta_flips": [], "keep_largest_component": False}


def test_continue_recomputes_for_other_weights_or_settings_only(tmp_path):
    import torch

    from bundle.networks import LMNet

    inp, out = tmp_path / "in", tmp_path / "out"
    write_oblique_nifti(inp / "a.nii.gz")
    weights = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = tmp_path / f"w{seed}.pt"
        torch.save(LMNet(**{k: v for k, v in SMALL["network_def"].items() if k != "_target_"}).state_dict(), path)
        weights.append(path)

    def run(weights_file: Path, **overrides) -> dict:
        predictor = Predictor.from_bundle(Path(__file__).resolve().parents[2], "lgg", "cpu", weights_file,
                                          {**SMALL, **overrides}, formats=("nifti",), continue_prediction=True,
                                          quiet=True)
        calls = []
        inner = predictor.segmenter
        predictor.segmenter = lambda image: calls.append(1) or inner(image)
        predictor.predict_folder(inp, out)
        return len(calls)

    assert run(weights[0]) == 1
    assert run(weights[0]) == 0  # same weights and settings: finished, skipped
    assert run(weights[1]) == 1  # other weights: computed again
    assert run(weights[1], tta_flips=[1]) == 1  # another flip setting: computed again
    assert run(weights[1], tta_flips=[1]) == 0
