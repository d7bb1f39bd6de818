"""The batch predictor end to end on real DICOM, NIfTI and PNG inputs written for the test."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.uid import generate_uid

from bundle.io.geometry import LPS_TO_RAS
from bundle.networks import LMNet
from bundle.predictor import Predictor
from scripts import predict
from tests.io.helpers import (
    PATIENT,
    phantom,
    small_segmenter,
    tree_hashes,
    write_mr_series,
    write_oblique_nifti,
    write_rgb_png,
    write_text_report,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class CountingSegmenter:
    """The real small segmenter, counting its calls."""

    def __init__(self) -> None:
        self.inner, self.calls = small_segmenter(), 0
        self.class_names = self.inner.class_names

    def __call__(self, image):
        self.calls += 1
        return self.inner(image)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    inp = root / "incoming"
    study = generate_uid()
    names = [f"{v:04x}" for v in np.random.default_rng(0).permutation(1000)[:10]]
    series = [write_mr_series(inp / "exam", number=3, study_uid=study, names=names[:6]),
              write_mr_series(inp / "exam", number=4, study_uid=study, seed=1, rows=32, cols=36, slices=4,
                              names=names[6:])]
    gap = write_mr_series(inp / "other", number=5, skip=(2,), seed=2)
    write_text_report(inp / "exam" / "report", study)
    affine = write_oblique_nifti(inp / "vol.nii.gz")
    write_rgb_png(inp / "us" / "img.png")
    (inp / "broken.nii.gz").write_bytes(b"not a nifti at all")
    (inp / "empty_patient").mkdir()
    (inp / "README.txt").write_text("export notes")
    before = tree_hashes(inp)
    segmenter = CountingSegmenter()
    records = Predictor(segmenter, quiet=True).predict_folder(inp, root / "out")
    return {"root": root, "inp": inp, "out": root / "out", "series": series, "gap": gap, "affine": affine,
            "records": {r.case_id: r for r in records}, "before": before, "segmenter": segmenter}


def _record_of(batch, series):
    return next(r for r in batch["records"].values() if series.series_uid in r.input)


def test_good_cases_done_bad_cases_with_reasons(batch):
    by_status = {}
    for record in batch["records"].values():
        by_status.setdefault(record.status, []).append(record)
    assert len(by_status["done"]) == 4 and batch["segmenter"].calls == 4  # 2 series, the NIfTI, the PNG
    reasons = sorted(r.error.split(": ", 1)[1] for r in by_status["failed"])
    assert [reason.split(":")[0].split(" (")[0] for reason in reasons] == [
        "empty folder", "missing slice(s)", "non-image DICOM", "unreadable NIfTI file"]
    assert [r.input for r in by_status["ignored"]] == [str(batch["inp"] / "README.txt")]
    manifest = json.loads((batch["out"] / "manifest.json").read_text())
    assert {row["case_id"]: row["status"] for row in manifest} == {k: r.status for k, r in batch["records"].items()}
    assert json.loads((batch["out"] / "arguments.json").read_text())["settings"]["formats"] == list(predict.FORMATS)
    assert len(list(batch["out"].glob("*_seg.dcm"))) == 2


def test_inputs_untouched_and_no_output_inside_input(batch):
    assert tree_hashes(batch["inp"]) == batch["before"]
    with pytest.raises(ValueError, match="is inside the input folder"):
        Predictor(batch["segmenter"], quiet=True).predict_folder(batch["inp"], batch["inp"] / "out")


def test_dicom_label_in_series_space(batch):
    for series in batch["series"]:
        record = _record_of(batch, series)
        label = nib.load(batch["out"] / f"{record.case_id}_label.nii.gz")
        assert label.shape == series.pixels.shape
        x, y = series.orientation[:3], series.orientation[3:]
        for r, c, k in [(0, 0, 0), (5, 7, 1), (series.pixels.shape[0] - 1, series.pixels.shape[1] - 1, 3)]:
            expected = series.positions[k] + c * series.spacing[1] * x + r * series.spacing[0] * y
            lps = LPS_TO_RAS @ label.affine @ np.array([r, c, k, 1.0])
            np.testing.assert_allclose(lps[:3], expected, atol=1e-4)
        voxels = int(np.count_nonzero(label.get_fdata()))
        assert 0 < voxels < label.get_fdata().size  # a mixed label map, so the SEG comparison means something
        assert record.lesion_volume_ml == pytest.approx(voxels * 0.9 * 0.7 * 2.5 / 1000, rel=1e-3)


def test_nifti_and_png_labels_keep_source_geometry(batch):
    label = nib.load(batch["out"] / "vol_label.nii.gz")
    source = nib.load(batch["inp"] / "vol.nii.gz")
    assert label.shape == source.shape and label.get_data_dtype() == np.uint8
    np.testing.assert_allclose(label.affine, batch["affine"], atol=1e-5)
    np.testing.assert_allclose(label.header.get_zooms(), source.header.get_zooms(), rtol=1e-6)
    assert Image.open(batch["out"] / "us__img_label.png").size == Image.open(batch["inp"] / "us" / "img.png").size
    assert Image.open(batch["out"] / "us__img_overlay.png").mode == "RGB"
    assert batch["records"]["us__img"].lesion_area_mm2 is not None


def test_dicom_seg_round_trip(batch):
    for series in batch["series"]:
        record = _record_of(batch, series)
        label = np.asarray(nib.load(batch["out"] / f"{record.case_id}_label.nii.gz").dataobj)
        path = batch["out"] / f"{record.case_id}_seg.dcm"
        seg = hd.seg.segread(path)
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
        referenced = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
        assert referenced == set(series.sop_uids)
        for key in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID"):
            assert str(seg.get(key)) == PATIENT[key]
        assert seg.StudyInstanceUID == series.study_uid and seg.FrameOfReferenceUID
        frames = seg.get_pixels_by_source_instance(series.sop_uids, segment_numbers=[1])
        np.testing.assert_array_equal(frames[..., 0], np.moveaxis(label, -1, 0))
        raw = pydicom.dcmread(path)  # independently of highdicom: per-frame source reference and pixels
        assert raw.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and raw.NumberOfFrames == len(series.sop_uids)
        for i, item in enumerate(raw.PerFrameFunctionalGroupsSequence):
            source_uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            np.testing.assert_array_equal(raw.pixel_array[i], label[:, :, series.sop_uids.index(source_uid)])


def test_continue_does_nothing_the_second_time(batch):
    outputs = {p: p.stat().st_mtime_ns for p in batch["out"].iterdir() if p.name.startswith(("exam", "vol", "us"))}
    counting = CountingSegmenter()
    records = Predictor(counting, continue_prediction=True, quiet=True).predict_folder(batch["inp"], batch["out"])
    assert counting.calls == 0  # the failed cases are retried, but fail again before the network
    assert {r.case_id: r.status for r in records} == {k: r.status for k, r in batch["records"].items()}
    assert {p: p.stat().st_mtime_ns for p in outputs} == outputs


def test_parts_cover_all_cases_once_and_merge(tmp_path):
    inp = tmp_path / "in"
    for i in range(5):
        write_rgb_png(inp / f"img{i}.png", size=(24, 20), seed=i)
    (inp / "bad.png").write_bytes(b"junk")
    segmenter = small_segmenter()
    seen = []
    for part in range(2):
        predictor = Predictor(segmenter, formats=("png",), num_parts=2, part_id=part, quiet=True)
        seen += [r.case_id for r in predictor.predict_folder(inp, tmp_path / "out")]
    assert sorted(seen) == sorted(["bad"] + [f"img{i}" for i in range(5)])
    assert (tmp_path / "out" / "manifest_part1-of-2.csv").is_file()
    assert predict.main(["--output", str(tmp_path / "out"), "--merge-manifests", "--quiet"]) == 1  # bad.png failed
    rows = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sorted(r["case_id"] for r in rows) == sorted(seen)

    counting = CountingSegmenter()  # --continue over the parts' records: only a changed input runs again
    write_rgb_png(inp / "img3.png", size=(24, 20), seed=99)
    rerun = Predictor(counting, formats=("png",), continue_prediction=True, quiet=True)
    records = {r.case_id: r.status for r in rerun.predict_folder(inp, tmp_path / "out")}
    assert counting.calls == 1 and records["img3"] == "done" and records["bad"] == "failed"


def test_predict_array_channels_and_shapes():
    predictor = Predictor(small_segmenter(), channel_index=2)
    volume = np.stack([phantom((24, 28, 3), 0)] * 3, axis=-1).astype(np.float32)
    labels, probabilities = predictor.predict_array(volume)
    assert labels.shape == (24, 28, 3) and probabilities.shape == (2, 24, 28, 3)
    with pytest.raises(ValueError, match="channel_index 2 is out of range"):
        predictor.predict_array(volume[..., :2])
    with pytest.raises(ValueError, match=r"got shape \(4,\)"):
        predictor.predict_array(np.zeros(4))


def test_cli_exit_codes(tmp_path):
    weights = tmp_path / "model.pt"
    torch.manual_seed(0)
    torch.save(LMNet(spatial_dims=2, in_channels=1, out_channels=2).state_dict(), weights)
    inp = tmp_path / "in"
    write_rgb_png(inp / "a.png", size=(30, 26))
    common = ["--task", "busi", "--weights", str(weights), "--device", "cpu", "--quiet"]
    assert predict.main(["--input", str(inp), "--output", str(tmp_path / "out"), "--save-probabilities", *common]) == 0
    assert (tmp_path / "out" / "a_overlay.png").is_file() and (tmp_path / "out" / "manifest.csv").is_file()
    probabilities = nib.load(tmp_path / "out" / "a_probabilities.nii.gz").get_fdata()
    assert probabilities.shape == (30, 26, 1, 2)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    labels = np.asarray(Image.open(tmp_path / "out" / "a_label.png"))
    np.testing.assert_array_equal(labels == 255, probabilities[:, :, 0, 1] > probabilities[:, :, 0, 0])
    (inp / "b.tif").write_bytes(b"junk")
    assert predict.main(["--input", str(inp), "--output", str(tmp_path / "out"), "--continue", *common]) == 1
    assert predict.main(["--input", str(inp), "--output", str(inp / "o"), *common]) == 2
    assert not (inp / "o").exists() and sorted(p.name for p in Path(inp).iterdir()) == ["a.png", "b.tif"]
