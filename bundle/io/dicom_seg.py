"""Writing a label map as a DICOM Segmentation (highdicom) that references the source series.

highdicom copies the patient and study identifiers (name, id, birth date, sex, study UID, accession number, study
id, date and time, referring physician) from the source images, so a PACS or viewer files the SEG with them.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes

from .dicom import DicomSource
from .errors import CaseError
from .writers import atomic_path

__all__ = ["write_dicom_seg", "seg_frames_in_source_order"]

logger = logging.getLogger(__name__)
SEG_SERIES_OFFSET = 1000  # the SEG's SeriesNumber is the source's plus this, to list it beside the source


def seg_frames_in_source_order(labels: np.ndarray, source: DicomSource) -> tuple[list, np.ndarray]:
    """The source images to reference and the label frames (frames, rows, cols) in their order.

    Single-frame series: one frame per source instance, in slice order. One multi-frame object: frames in the
    object's own frame order (highdicom pairs them by index).
    """
    volume = labels[..., None] if labels.ndim == 2 else labels
    frames = np.moveaxis(volume, -1, 0)
    multi = [ds for ds in source.datasets if int(ds.get("NumberOfFrames", 1) or 1) > 1]
    if not multi:
        return [source.datasets[d] for d, _ in source.frames], frames
    if len(source.datasets) > 1:
        raise CaseError(Path(source.datasets[0].filename or ".").parent,
                        "a DICOM SEG for a series of several multi-frame objects is not supported")
    ordered = np.empty_like(frames)
    for k, (_, frame) in enumerate(source.frames):
        ordered[frame] = frames[k]
    return list(source.datasets), ordered


def write_dicom_seg(path: str | os.PathLike, labels: np.ndarray, source: DicomSource, class_names: Sequence[str],
                    software_version: str = "0.1.0") -> Path:
    """Write ``labels`` ((rows, cols) or (rows, cols, slices) in the reader's slice order; 0 = background, class
    ``c`` -> segment ``c`` named ``class_names[c]``) as a binary DICOM SEG with every frame kept."""
    images, frames = seg_frames_in_source_order(labels.astype(np.uint8), source)
    algorithm = hd.AlgorithmIdentificationSequence(name="LM-Net", family=codes.cid7162.ArtificialIntelligence,
                                                   version=software_version)
    segments = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=str(name)[:64],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, name in enumerate(class_names[1:], start=1)
    ]
    first = images[0]
    series_number = (int(first.get("SeriesNumber", 0) or 0) + SEG_SERIES_OFFSET) % 2**31 or SEG_SERIES_OFFSET
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # highdicom warns about optional attributes it fills in
        seg = hd.seg.Segmentation(
            source_images=images, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segments, series_instance_uid=hd.UID(), series_number=series_number,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="LM-Net bundle",
            manufacturer_model_name="LM-Net", software_versions=software_version, device_serial_number="none",
            series_description=f"LM-Net segmentation of {first.get('SeriesDescription', 'series')}"[:64],
            content_label="LMNET", content_description="automatic segmentation (LM-Net)",
            omit_empty_frames=False,
        )
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return Path(path)
