"""NIfTI, ITK (MetaImage / NRRD) and 2D image readers: arrays, geometry, channels and refusals."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from bundle.io import CaseError, discover_cases, load_case

from .helpers import phantom, write_oblique_nifti, write_rgb_png


def _only_case(folder):
    cases = [c for c in discover_cases(folder) if c.kind != "ignored"]
    assert len(cases) == 1
    return cases[0]


def test_nifti_as_stored_with_affine(tmp_path):
    affine = write_oblique_nifti(tmp_path / "v.nii.gz", shape=(20, 18, 4))
    loaded = load_case(_only_case(tmp_path))
    np.testing.assert_array_equal(loaded.image, np.asarray(nib.load(tmp_path / "v.nii.gz").dataobj, np.float32))
    np.testing.assert_array_equal(loaded.geometry.affine, affine)
    np.testing.assert_allclose(loaded.geometry.spacing, (0.8, 1.1, 3.0), rtol=1e-6)


def test_nifti_4d_takes_channel(tmp_path):
    write_oblique_nifti(tmp_path / "v.nii", shape=(20, 18, 4, 3))
    data = np.asarray(nib.load(tmp_path / "v.nii").dataobj)
    case = _only_case(tmp_path)
    np.testing.assert_array_equal(load_case(case, channel_index=1).image, data[..., 1])
    with pytest.raises(CaseError, match=r"v\.nii: channel_index 3 is out of range .*\(3 channels"):
        load_case(case, channel_index=3)


def test_wrong_dimensionality_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2, 2), np.float32), np.eye(4)), tmp_path / "five.nii.gz")
    with pytest.raises(CaseError, match=r"five\.nii\.gz: wrong dimensionality: .* found shape \(4, 4, 4, 2, 2\)"):
        load_case(_only_case(tmp_path))


def test_metaimage_matches_nifti_layout_and_affine(tmp_path):
    itk = pytest.importorskip("itk")
    data = phantom((20, 18, 4), 0).astype(np.float32)  # index order (x, y, z)
    image = itk.image_from_array(np.ascontiguousarray(data.transpose(2, 1, 0)))  # numpy side is (z, y, x)
    image.SetSpacing((0.8, 1.1, 3.0))
    image.SetOrigin((10.0, -5.0, 2.0))
    direction = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    image.SetDirection(itk.matrix_from_array(direction))
    itk.imwrite(image, str(tmp_path / "v.mha"))
    loaded = load_case(_only_case(tmp_path))
    np.testing.assert_array_equal(loaded.image, data)
    expected = np.eye(4)  # LPS index->world, flipped to RAS
    expected[:3, :3] = direction @ np.diag([0.8, 1.1, 3.0])
    expected[:3, 3] = (10.0, -5.0, 2.0)
    expected[:2] *= -1
    np.testing.assert_allclose(loaded.geometry.affine, expected, atol=1e-6)


def test_rgb_png_becomes_luminance(tmp_path):
    rgb = write_rgb_png(tmp_path / "a.png").astype(np.float32)
    loaded = load_case(_only_case(tmp_path))
    luminance = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    assert loaded.image.shape == rgb.shape[:2] and not loaded.is_volume
    np.testing.assert_allclose(loaded.image, luminance, atol=1.0)  # PIL rounds to 8 bit
    assert not loaded.geometry.spacing_known and "assumed" in loaded.geometry.describe_spacing()


def test_multipage_tiff_and_garbage_refused(tmp_path):
    pages = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (1, 2)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    cases = {c.paths[0].name: c for c in discover_cases(tmp_path)}
    with pytest.raises(CaseError, match=r"stack\.tif: 2 pages/frames: expected one 2D image"):
        load_case(cases["stack.tif"])
    with pytest.raises(CaseError, match=r"bad\.png: unreadable image file"):
        load_case(cases["bad.png"])
