"""Test inputs written for real (pydicom, nibabel, PIL) and a small real segmenter."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from bundle.networks import LMNet, reparameterize_model
from bundle.segmenter import Segmenter
from tests.helpers import config_segmenter, lesion_logit

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
PATIENT = {"PatientName": "Test^Patient", "PatientID": "LMNET-0001", "PatientBirthDate": "19700101",
           "PatientSex": "F", "AccessionNumber": "ACC123", "StudyID": "S1", "StudyDate": "20240102",
           "StudyTime": "101112", "ReferringPhysicianName": "Doc^Tor"}


def small_segmenter(size: int = 32, seed: int = 0) -> Segmenter:
    """The LGG inference config's pipeline (network input ``size`` x ``size``, no flips, no post-processing) around
    a small, real, randomly initialised LMNet (fast on a CPU)."""
    torch.manual_seed(seed)
    net = LMNet(spatial_dims=2, in_channels=1, out_channels=2, features=(8, 16, 16, 32, 32), lft_heads=2,
                gft_heads=8)
    net = reparameterize_model(net).eval()
    with torch.no_grad():  # centre the random head on a phantom so that labels are mixed, not all one class
        x = torch.as_tensor(phantom((size, size), seed).astype(np.float32) / 600.0)[None, None]
        logits = net(x)
        net.head.bias[1] += lesion_logit("lgg") - (logits[0, 1] - logits[0, 0]).median()
    return config_segmenter(net, roi_size=[size, size], tta_flips=[], keep_largest_component=False, sw_batch_size=8)


def rotation(a: float, b: float, c: float) -> np.ndarray:
    """A proper rotation matrix from three angles (radians)."""
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return rz @ ry @ rx


def phantom(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Smooth background plus a bright ellipse, uint16 (something with structure for the network)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum((g / r) ** 2 for g, r in zip(grids, (0.5, 0.4, 0.9)[: len(shape)], strict=True)) < 1
    image = 200 + 300 * inside + rng.normal(0, 20, shape)
    return np.clip(image, 0, 4000).astype(np.uint16)


@dataclass
class Series:
    """A written MR series: files in slice order (k = 0 first along the normal), and the truth."""

    series_uid: str
    study_uid: str
    files: list[Path]
    sop_uids: list[str]
    pixels: np.ndarray  # (rows, cols, slices) as stored
    positions: np.ndarray  # (slices, 3) LPS
    orientation: np.ndarray  # 6 values
    spacing: tuple[float, float]
    extra: dict = field(default_factory=dict)


def _mr_slice(series_uid: str, study_uid: str, frame_uid: str, k: int, number: int) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = MRImageStorage
    for key, value in PATIENT.items():
        setattr(ds, key, value)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", number, k + 1
    ds.SeriesDescription, ds.Manufacturer = f"T2 series {number}", "TestVendor"
    ds.ContentDate, ds.ContentTime, ds.SeriesDate, ds.SeriesTime = "20240102", "101112", "20240102", "101112"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
    ds.EchoTime, ds.RepetitionTime, ds.MagneticFieldStrength, ds.SliceThickness = 90.0, 3000.0, 1.5, 2.5
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


def write_mr_series(folder: Path, rows: int = 40, cols: int = 48, slices: int = 6, step: float = 2.5,
                    spacing: tuple[float, float] = (0.9, 0.7), number: int = 1, skip: tuple[int, ...] = (),
                    study_uid: str | None = None, seed: int = 0, names: list[str] | None = None) -> Series:
    """Write an oblique MR series, one file per slice, named ``names[k]`` (random hex without extension by default);
    ``skip`` leaves those slice positions out (a series with missing slices)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    rot = rotation(0.3 + seed, -0.2, 0.15)
    origin = np.array([-30.0, 20.0, 15.0 + seed])
    volume = phantom((rows, cols, slices), seed)
    kept = [k for k in range(slices) if k not in skip]
    series = Series(series_uid, study_uid, [], [], volume[:, :, kept], np.zeros((len(kept), 3)),
                    np.concatenate([rot[:, 0], rot[:, 1]]), spacing)
    for i, k in enumerate(kept):
        ds = _mr_slice(series_uid, study_uid, frame_uid, k, number)
        ds.ImageOrientationPatient = [float(v) for v in series.orientation]
        position = origin + k * step * rot[:, 2]
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.PixelSpacing = [spacing[0], spacing[1]]
        ds.Rows, ds.Columns = rows, cols
        ds.PixelData = np.ascontiguousarray(volume[:, :, k]).tobytes()
        name = names[k] if names is not None else f"{rng.integers(1 << 40):x}"
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        series.files.append(path)
        series.sop_uids.append(ds.SOPInstanceUID)
        series.positions[i] = position
    return series


def write_text_report(path: Path, study_uid: str) -> Path:
    """A Basic Text SR (a report: DICOM without pixel data)."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.Modality = BASIC_TEXT_SR, "SR"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = study_uid, generate_uid(), 99
    ds.PatientID, ds.ValueType, ds.CompletionFlag = PATIENT["PatientID"], "CONTAINER", "COMPLETE"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_oblique_nifti(path: Path, shape: tuple[int, ...] = (36, 30, 5), seed: int = 1) -> np.ndarray:
    """A NIfTI with rotation, anisotropic spacing and an origin; returns its affine."""
    affine = np.eye(4)
    affine[:3, :3] = rotation(0.4, 0.25, -0.3) @ np.diag([0.8, 1.1, 3.0])
    affine[:3, 3] = [12.5, -40.0, 7.25]
    data = phantom(shape[:3], seed).astype(np.int16)
    if len(shape) == 4:
        data = np.stack([data * (c + 1) for c in range(shape[3])], axis=-1)
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return nib.load(path).affine


def write_rgb_png(path: Path, size: tuple[int, int] = (44, 52), seed: int = 2) -> np.ndarray:
    """An RGB PNG; returns the RGB array."""
    gray = (phantom(size, seed) // 4).clip(0, 255).astype(np.uint8)
    rgb = np.stack([gray, gray // 2 + 40, 255 - gray], axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, mode="RGB").save(path)
    return rgb


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
