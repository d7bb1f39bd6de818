"""Batch inference on folders of DICOM series, NIfTI / NRRD / MetaImage volumes and 2D images.

The :class:`Predictor` takes its settings in the constructor (as nnU-Net's predictor does), then runs on a folder
(:meth:`~Predictor.predict_folder`), a list of files (:meth:`~Predictor.predict_files`) or an array
(:meth:`~Predictor.predict_array`). Cases are read by a small thread pool ahead of the network and written by
another behind it, so file input/output overlaps with compute; queues are bounded, so memory does not grow with
the number of cases. A case that cannot be read or segmented is recorded in the manifest with its reason and the
batch goes on.

Example::

    predictor = Predictor.from_bundle(".", task="lgg", device="auto")
    records = predictor.predict_folder("/data/incoming", "/data/lmnet_out")
    failed = [r for r in records if r.status == "failed"]
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .checkpoints import sha256_file
from .fileio import atomic_path
from .io.discovery import Case, discover_cases, select_part
from .io.errors import CaseError
from .io.manifest import CaseRecord, manifest_name, write_manifest, write_record
from .io.outputs import FORMATS, OutputSettings, lesion_size, write_case_outputs
from .io.readers import LoadedCase, load_case
from .io.resume import check_output_location, finished_record, settings_fingerprint

__all__ = ["Predictor"]

logger = logging.getLogger(__name__)
Segmenter = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class Predictor:
    """Runs a slice segmenter over many cases and writes labels, DICOM SEGs, overlays and a manifest.

    Args:
        segmenter: callable ``image -> (labels, probabilities)`` on a float32 (H, W) image or (H, W, D) volume,
            e.g. :class:`bundle.segmenter.SliceSegmenter`.
        formats: outputs to write, a subset of ("nifti", "dicom-seg", "png"); default all three.
        channel_index: channel taken from 4D (H, W, D, C) volumes (default 0; the LGG task uses 1 = FLAIR);
            ``None`` for a network that takes RGB 2D images (the kvasir task): images are read in colour.
        class_names: names of the output classes, background first (default: the segmenter's task, else
            ("background", "lesion")); non-background classes become the DICOM SEG's segments.
        save_probabilities: also write class probabilities as NIfTI (default False).
        overlay_slices: PNG overlays per volume, on the slices with the most lesion (default 3).
        continue_prediction: skip cases whose outputs a previous run finished for the same input (default False).
        num_parts, part_id: run only part ``part_id`` of ``num_parts`` of the sorted cases (default 1, 0).
        num_readers: threads reading cases ahead of the network (default 2).
        prefetch: cases read ahead and waiting for the network at most (default 2).
        num_writers: threads writing outputs behind the network (default 1; at most twice as many cases queued).
        quiet: no progress bar (default False).
        software_version: written into DICOM SEGs (default "unknown").
        inference_settings: the resolved settings of the inference pipeline (the config's ``inference_settings``);
            with the SHA-256 of the segmenter's weights they are part of the ``--continue`` fingerprint, so a case
            finished with other weights or settings runs again.
    """

    def __init__(
        self, segmenter: Segmenter, formats: Sequence[str] = FORMATS, channel_index: int | None = 0,
        class_names: Sequence[str] | None = None, save_probabilities: bool = False, overlay_slices: int = 3,
        continue_prediction: bool = False, num_parts: int = 1, part_id: int = 0, num_readers: int = 2,
        prefetch: int = 2, num_writers: int = 1, quiet: bool = False, software_version: str = "unknown",
        inference_settings: dict | None = None,
    ) -> None:
        for name, value in (("num_readers", num_readers), ("prefetch", prefetch), ("num_writers", num_writers)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if channel_index is not None and channel_index < 0:
            raise ValueError(f"channel_index must be >= 0 or None (RGB images), got {channel_index}.")
        select_part([], num_parts, part_id)  # validates the split
        if class_names is None:
            class_names = getattr(segmenter, "class_names", ("background", "lesion"))
        self.segmenter = segmenter
        self.output = OutputSettings(tuple(formats), tuple(class_names), save_probabilities, overlay_slices,
                                     software_version)
        self.channel_index = channel_index
        self.continue_prediction = continue_prediction
        self.num_parts, self.part_id = num_parts, part_id
        self.num_readers, self.prefetch, self.num_writers = num_readers, prefetch, num_writers
        self.quiet = quiet
        self.inference_settings = dict(inference_settings or {})
        weights = getattr(segmenter, "weights", None)
        self.model_identity = {"weights_sha256": sha256_file(weights) if weights else None, **self.inference_settings}

    @classmethod
    def from_bundle(
        cls, bundle_root: str | os.PathLike = ".", task: str = "lgg", device: str = "auto",
        weights: str | os.PathLike | None = None, overrides: dict | None = None, **settings,
    ) -> Predictor:
        """A predictor with the :class:`~bundle.segmenter.Segmenter` of the task's inference configs (plus
        ``overrides``: config id -> value; ``weights`` replaces ``ckpt_path``); the config supplies
        ``channel_index``, the segmenter ``class_names``, unless given in ``settings``."""
        from .config import inference_parser, parsed

        parser = inference_parser(bundle_root, task, device, weights, overrides)
        settings.setdefault("channel_index", parsed(parser, "channel_index"))
        settings.setdefault("inference_settings", parsed(parser, "inference_settings"))
        return cls.from_config(parsed(parser, "segmenter"), bundle_root, **settings)

    @classmethod
    def from_config(cls, segmenter: Segmenter, bundle_root: str | os.PathLike, channel_index: int = 0,
                    **settings) -> Predictor:
        """A predictor around the inference config's ``segmenter`` (the ``predict`` entry of
        ``configs/inference.json``): ``channel_index`` and ``inference_settings`` from the config, the software
        version from the bundle's metadata."""
        metadata = Path(bundle_root) / "configs" / "metadata.json"
        if "software_version" not in settings and metadata.is_file():
            settings["software_version"] = str(json.loads(metadata.read_text()).get("version", "unknown"))
        return cls(segmenter, channel_index=None if channel_index is None else int(channel_index), **settings)

    def settings(self) -> dict:
        """The settings as plain data (written to ``arguments.json``)."""
        out = self.output
        return {
            "formats": list(out.formats), "channel_index": self.channel_index, "class_names": list(out.class_names),
            "save_probabilities": out.save_probabilities, "overlay_slices": out.overlay_slices,
            "continue_prediction": self.continue_prediction, "num_parts": self.num_parts, "part_id": self.part_id,
            "num_readers": self.num_readers, "prefetch": self.prefetch, "num_writers": self.num_writers,
            "software_version": out.software_version, "model": self.model_identity,
        }

    def predict_array(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Segment an in-memory (H, W) image, (H, W, D) volume or (H, W, D, C) volume (``channel_index`` is taken);
        with ``channel_index`` None, an (H, W, 3) RGB image.

        Returns:
            (labels uint8 with the spatial shape, probabilities float32 (num_classes, *spatial shape)).
        """
        image = np.asarray(image)
        if self.channel_index is None:
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"this task's network takes (H, W, 3) RGB images, got shape {image.shape}.")
            labels, probabilities = self.segmenter(np.ascontiguousarray(image, dtype=np.float32), color=True)
            return labels.astype(np.uint8, copy=False), probabilities
        if image.ndim == 4:
            if not 0 <= self.channel_index < image.shape[3]:
                raise ValueError(f"channel_index {self.channel_index} is out of range for shape {image.shape}.")
            image = image[..., self.channel_index]
        if image.ndim not in (2, 3):
            raise ValueError(f"image must be (H, W), (H, W, D) or (H, W, D, C), got shape {image.shape}.")
        labels, probabilities = self.segmenter(np.ascontiguousarray(image, dtype=np.float32))
        if labels.shape != image.shape:
            raise RuntimeError(f"the segmenter returned labels of shape {labels.shape} for an image of {image.shape}.")
        return labels.astype(np.uint8, copy=False), probabilities

    def predict_folder(self, input_folder: str | os.PathLike, output_folder: str | os.PathLike) -> list[CaseRecord]:
        """Segment every case found under ``input_folder`` (recursively) into ``output_folder``."""
        input_folder = Path(input_folder)
        if not input_folder.is_dir():
            raise NotADirectoryError(f"input folder {input_folder} does not exist or is not a folder.")
        return self.predict_files([input_folder], output_folder)

    def predict_files(self, files: Sequence[str | os.PathLike], output_folder: str | os.PathLike) -> list[CaseRecord]:
        """Segment the cases in ``files`` (files and/or folders) into ``output_folder``.

        Returns:
            one record per case of this part, as in the manifest; the run failed if any has status "failed".

        Raises:
            ValueError: the output folder lies in an input folder; FileNotFoundError: an input does not exist.
        """
        inputs = [Path(f) for f in files]
        output_dir = Path(output_folder).resolve()
        check_output_location(inputs, output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        cases = select_part(discover_cases(inputs), self.num_parts, self.part_id)
        self._write_arguments(inputs, output_dir, len(cases))
        records = sorted(self._run(cases, output_dir), key=lambda r: r.case_id)
        name = manifest_name(self.num_parts, self.part_id)
        write_manifest(output_dir, records, name)
        counts = {s: sum(r.status == s for r in records) for s in ("done", "failed", "ignored")}
        logger.info("%d done, %d failed, %d ignored; manifest: %s", counts["done"], counts["failed"],
                    counts["ignored"], output_dir / f"{name}.csv")
        return records

    def _write_arguments(self, inputs: list[Path], output_dir: Path, num_cases: int) -> None:
        import monai
        import torch

        name = manifest_name(self.num_parts, self.part_id).replace("manifest", "arguments")
        data = {"inputs": [str(p.resolve()) for p in inputs], "output": str(output_dir), "cases": num_cases,
                "settings": self.settings(), "argv": sys.argv, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "monai": monai.__version__}}
        with atomic_path(output_dir / f"{name}.json") as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    def _fingerprint(self, case: Case) -> str:
        return settings_fingerprint(case, self.output, self.channel_index, self.model_identity)

    def _triage(self, cases: list[Case], output_dir: Path) -> tuple[list[Case], list[CaseRecord]]:
        """Split into cases to run and records that are already final (ignored files, finished cases)."""
        todo, final = [], []
        for case in cases:
            if case.kind == "ignored":
                logger.info("ignored %s: %s", case.source, case.error)
                final.append(CaseRecord(case.case_id, case.source, case.kind, "ignored", error=case.error or ""))
            elif self.continue_prediction and (done := finished_record(case, output_dir, self._fingerprint)):
                final.append(done)
            else:
                todo.append(case)
        skipped = sum(r.status == "done" for r in final)
        if skipped:
            logger.info("--continue: %d case(s) already done, %d to run", skipped, len(todo))
        return todo, final

    def _failed(self, case: Case, err: BaseException, seconds: float) -> CaseRecord:
        reason = str(err) if isinstance(err, CaseError) else f"{case.source}: {type(err).__name__}: {err}"
        logger.warning("failed %s", reason)
        if not isinstance(err, CaseError):
            logger.debug("traceback of %s", case.case_id, exc_info=err)
        return CaseRecord(case.case_id, case.source, case.kind, "failed", seconds=round(seconds, 3), error=reason)

    def _segment(self, loaded: LoadedCase) -> tuple[np.ndarray, np.ndarray, float]:
        """Labels and probabilities in the layout of ``loaded.image``. A DICOM image goes to the network in ITK's
        index order (columns, rows[, slices]), as ``monai.bundle run``'s ITK reader gives a DICOM series to the
        same pipeline (NIfTI, NRRD and 2D images already come in the configs' readers' order)."""
        start = time.perf_counter()
        itk_order = loaded.case.kind == "dicom"
        image = loaded.image.swapaxes(0, 1) if itk_order else loaded.image
        labels, probabilities = self.predict_array(image)
        if itk_order:
            labels, probabilities = labels.swapaxes(0, 1), probabilities.swapaxes(1, 2)
        return np.ascontiguousarray(labels), np.ascontiguousarray(probabilities), time.perf_counter() - start

    def _write(self, output_dir: Path, loaded: LoadedCase, labels: np.ndarray, probabilities: np.ndarray | None,
               compute_seconds: float) -> CaseRecord:
        case = loaded.case
        start = time.perf_counter()
        try:
            outputs = write_case_outputs(output_dir, loaded, labels, probabilities, self.output)
        except Exception as err:  # a writer failing on one case (disk full, highdicom refusing) must not stop all
            return self._failed(case, err, loaded.read_seconds + compute_seconds + time.perf_counter() - start)
        voxels, area, volume = lesion_size(labels, loaded.geometry)
        seconds = loaded.read_seconds + compute_seconds + time.perf_counter() - start
        return CaseRecord(
            case.case_id, case.source, case.kind, "done", outputs, shape="x".join(map(str, labels.shape)),
            spacing=loaded.geometry.describe_spacing(), lesion_voxels=voxels,
            lesion_area_mm2=None if area is None else round(area, 3),
            lesion_volume_ml=None if volume is None else round(volume, 4), seconds=round(seconds, 3),
            fingerprint=self._fingerprint(case),
        )

    def _load(self, case: Case) -> tuple[LoadedCase | Exception, float]:
        """Runs in a reader thread: the loaded case or the error, and the seconds it took."""
        start = time.perf_counter()
        try:
            return load_case(case, self.channel_index), time.perf_counter() - start
        except Exception as err:  # reported by the main loop with the case
            return err, time.perf_counter() - start

    def _run(self, cases: list[Case], output_dir: Path) -> list[CaseRecord]:
        todo, records = self._triage(cases, output_dir)
        queue = iter(todo)
        loads: deque[tuple[Case, Future]] = deque()
        writes: deque[Future] = deque()

        def finish(record: CaseRecord) -> None:
            write_record(output_dir, record)
            records.append(record)
            bar.set_postfix(failed=sum(r.status == "failed" for r in records), refresh=False)
            bar.update()

        with (ThreadPoolExecutor(self.num_readers, "lmnet-read") as readers,
              ThreadPoolExecutor(self.num_writers, "lmnet-write") as writers,
              tqdm(total=len(todo), desc="cases", unit="case", disable=self.quiet) as bar):
            for _ in range(self.prefetch):  # read ahead: at most `prefetch` cases wait for the network
                if (case := next(queue, None)) is not None:
                    loads.append((case, readers.submit(self._load, case)))
            while loads:
                case, future = loads.popleft()
                if (upcoming := next(queue, None)) is not None:
                    loads.append((upcoming, readers.submit(self._load, upcoming)))
                loaded, read_seconds = future.result()
                if isinstance(loaded, Exception):
                    finish(self._failed(case, loaded, read_seconds))
                    continue
                try:
                    labels, probabilities, compute_seconds = self._segment(loaded)
                except Exception as err:  # e.g. an image too small for the network: record it, go on
                    finish(self._failed(case, err, read_seconds))
                    continue
                kept = probabilities if self.output.save_probabilities else None  # free memory early
                writes.append(writers.submit(self._write, output_dir, loaded, labels, kept, compute_seconds))
                del loaded, labels, probabilities, kept
                while writes and (writes[0].done() or len(writes) > 2 * self.num_writers):
                    finish(writes.popleft().result())
            while writes:
                finish(writes.popleft().result())
        return records
