"""DICOM series: discovery by content, ordering along the normal, geometry, validation, multi-frame, SEG."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from bundle.io import CaseError, discover_cases, load_case, read_dicom_series, write_dicom_seg
from bundle.io.geometry import LPS_TO_RAS

from .helpers import PATIENT, write_mr_series, write_text_report


def _edit(path, **attributes) -> None:
    ds = pydicom.dcmread(path)
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)


def _expected_lps(series, r: int, c: int, k: int) -> np.ndarray:
    """DICOM PS3.3 C.7.6.2.1.1: position of pixel (row r, column c) of slice k."""
    x, y = series.orientation[:3], series.orientation[3:]
    return series.positions[k] + c * series.spacing[1] * x + r * series.spacing[0] * y


def test_series_grouped_by_uid_not_by_name(tmp_path):
    names_a = [f"z{k}" for k in range(6)]  # names sort against slice order, and interleave with the other series
    a = write_mr_series(tmp_path / "in", number=3, names=names_a[::-1])
    b = write_mr_series(tmp_path / "in", number=4, seed=1, slices=4, names=[f"z{k}.txt" for k in range(4)])
    write_text_report(tmp_path / "in" / "notes.dcm", a.study_uid)
    (tmp_path / "in" / "readme.md").write_text("not an image")
    cases = {c.series_uid: c for c in discover_cases(tmp_path / "in") if c.kind == "dicom"}
    assert sorted(len(c.paths) for c in cases.values()) == [1, 4, 6]
    assert set(cases[a.series_uid].paths) == set(a.files) and set(cases[b.series_uid].paths) == set(b.files)
    ignored = [c for c in discover_cases(tmp_path / "in") if c.kind == "ignored"]
    assert [c.paths[0].name for c in ignored] == ["readme.md"]


def test_slices_ordered_along_normal_with_exact_geometry(tmp_path):
    series = write_mr_series(tmp_path, names=["e", "a", "d", "b", "f", "c"])  # file names in no useful order
    image, geometry, source = read_dicom_series(sorted(series.files))
    assert image.shape == series.pixels.shape and image.dtype == np.float32
    np.testing.assert_array_equal(image, series.pixels.astype(np.float32))
    assert [source.datasets[d].SOPInstanceUID for d, _ in source.frames] == series.sop_uids
    rows, cols, slices = image.shape
    for r, c, k in [(0, 0, 0), (rows - 1, 0, 2), (0, cols - 1, slices - 1), (rows - 1, cols - 1, 3)]:
        lps = LPS_TO_RAS @ geometry.affine @ np.array([r, c, k, 1.0])
        np.testing.assert_allclose(lps[:3], _expected_lps(series, r, c, k), atol=1e-6)
    np.testing.assert_allclose(geometry.spacing, (0.9, 0.7, 2.5), atol=1e-9)


def test_missing_slice_named(tmp_path):
    series = write_mr_series(tmp_path, skip=(3,))
    with pytest.raises(CaseError, match=r"missing slice\(s\).*gap of 5\.000 mm.*spacing is 2\.500 mm"):
        read_dicom_series(series.files)


@pytest.mark.parametrize(
    "change, message",
    [
        ("orientation", "mixed orientations"),
        ("spacing", "inconsistent slice spacing"),
        ("duplicate", "share a position"),
        ("size", "mixed series: Rows"),
    ],
)
def test_invalid_series_refused_naming_the_file(tmp_path, change, message):
    series = write_mr_series(tmp_path)
    target = series.files[2]
    if change == "orientation":
        _edit(target, ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    elif change == "spacing":
        shifted = series.positions[2] + 0.7 * np.cross(series.orientation[:3], series.orientation[3:])
        _edit(target, ImagePositionPatient=[float(v) for v in shifted])
    elif change == "duplicate":
        _edit(target, ImagePositionPatient=[float(v) for v in series.positions[1]])
    else:
        _edit(target, Rows=20, PixelData=np.zeros((20, 48), np.uint16).tobytes())
    with pytest.raises(CaseError, match=message) as info:
        read_dicom_series(series.files)
    assert str(tmp_path) in str(info.value)


def test_report_is_a_non_image_case(tmp_path):
    report = write_text_report(tmp_path / "r" / "report", generate_uid())
    with pytest.raises(CaseError, match="non-image DICOM: SOP class Basic Text SR Storage") as info:
        read_dicom_series([report])
    assert info.value.path == str(report)


def test_unreadable_dicom_named(tmp_path):
    series = write_mr_series(tmp_path / "in", slices=3)
    data = series.files[1].read_bytes()
    series.files[1].write_bytes(data[: len(data) // 2])  # truncated pixel data
    (tmp_path / "in" / "junk.dcm").write_bytes(b"\x00" * 10)
    cases = {c.paths[0].name if c.kind != "dicom" or c.error else "series": c for c in discover_cases(tmp_path / "in")}
    with pytest.raises(CaseError, match="junk.dcm: not a DICOM file"):
        load_case(cases["junk.dcm"])
    with pytest.raises(CaseError, match=series.files[1].name):
        load_case(cases["series"])


def test_multiframe_matches_single_frame_series_and_seg(tmp_path):
    series = write_mr_series(tmp_path / "single", slices=5)
    legacy = [pydicom.dcmread(f) for f in reversed(series.files)]  # frames stored against slice order
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(legacy, generate_uid(), 10, generate_uid(), 1)
    path = tmp_path / "multi" / "enhanced"
    path.parent.mkdir()
    enhanced.save_as(path)
    single, single_geometry, _ = read_dicom_series(series.files)
    image, geometry, source = read_dicom_series([path])
    np.testing.assert_array_equal(image, single)
    np.testing.assert_allclose(geometry.affine, single_geometry.affine, atol=1e-5)

    labels = (image > np.median(image)).astype(np.uint8)
    write_dicom_seg(tmp_path / "seg.dcm", labels, source, ("background", "lesion"))
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    for k, (_, frame) in enumerate(source.frames):
        pixels = seg.get_pixels_by_source_frame(enhanced.SOPInstanceUID, [frame + 1], segment_numbers=[1])
        np.testing.assert_array_equal(pixels[0, :, :, 0], labels[:, :, k])
    assert seg.PatientID == PATIENT["PatientID"] and seg.StudyInstanceUID == series.study_uid


def test_old_files_without_preamble_found_by_content(tmp_path):
    series = write_mr_series(tmp_path / "in", slices=3)
    for path in series.files:  # ACR-NEMA style: no preamble, no "DICM", no meta header, implicit VR
        ds = pydicom.dcmread(path)
        del ds.file_meta
        ds.preamble = None
        pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert series.files[0].read_bytes()[:2] == b"\x08\x00"
    (case,) = discover_cases(tmp_path / "in")
    assert case.kind == "dicom" and case.series_uid == series.series_uid and case.error is None
    np.testing.assert_array_equal(load_case(case).image, series.pixels.astype(np.float32))


def test_rescale_and_monochrome1(tmp_path):
    series = write_mr_series(tmp_path, slices=3)
    for path in series.files:
        _edit(path, RescaleSlope=2.0, RescaleIntercept=-100.0, PhotometricInterpretation="MONOCHROME1")
    image, _, _ = read_dicom_series(series.files)
    values = series.pixels.astype(np.float32) * 2 - 100  # modality values; MONOCHROME1 shows them inverted
    np.testing.assert_allclose(image, values.max() + values.min() - values)
