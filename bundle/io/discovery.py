"""Finding cases in a folder or a list of files.

A case is one thing the network segments and one output set: a DICOM series (all files with one
SeriesInstanceUID, found recursively whatever their names or extensions), or one NIfTI / NRRD / MetaImage file,
or one 2D PNG / JPEG / TIFF image. Case ids are derived from paths relative to the input root, so they are the
same on every machine that sees the same folder; cases are sorted by id, and :func:`select_part` splits that
list deterministically for ``--num-parts`` / ``--part-id``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from ..suffixes import IMAGE_SUFFIXES, image_kind, strip_image_suffix

__all__ = ["Case", "discover_cases", "select_part", "input_fingerprint", "datalist_of"]

logger = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")  # a file named so that is not DICOM is a failed case, not ignored
COMPANION_SUFFIXES = (".raw", ".zraw", ".raw.gz")  # data files of .mhd / .nhdr headers
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR
_HEADER_TAGS = ["SeriesInstanceUID", "SeriesNumber", "SOPClassUID", "Modality"]


@dataclass(frozen=True)
class Case:
    """One unit of work.

    Attributes:
        case_id: file-system-safe, unique, deterministic name; output files start with it.
        kind: "dicom", "nifti", "itk", "image"; "ignored" (a file that is not an image; not an error); or
            "empty" (a folder without files, a failed case).
        paths: the input files (a DICOM series has several, sorted by path).
        root: the input root the id is relative to.
        series_uid: SeriesInstanceUID of a DICOM case.
        error: a problem already found while discovering (the case fails with it before reading).
    """

    case_id: str
    kind: str
    paths: tuple[Path, ...]
    root: Path
    series_uid: str | None = None
    error: str | None = None
    description: str = field(default="", compare=False)

    @property
    def source(self) -> str:
        """The input as the manifest shows it: the file, or for a series its folder and file count."""
        first = self.paths[0] if self.paths else self.root
        if self.kind == "dicom" and len(self.paths) > 1:
            return f"{first.parent} ({len(self.paths)} files, series {self.series_uid})"
        return str(first)


def _safe_id(text: str) -> str:
    text = text.replace(os.sep, "__").replace("/", "__")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "case"


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _looks_like_dicom_without_preamble(path: Path) -> bool:
    """Old files without the 128-byte preamble and "DICM" start directly with a group 0002 or 0008 tag."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head[:2] in (b"\x02\x00", b"\x08\x00") and len(head) == 4


def _read_dicom_header(path: Path) -> pydicom.Dataset | None:
    """The few header fields discovery needs, or ``None`` when ``path`` is not DICOM at all."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except InvalidDicomError:
        if not _looks_like_dicom_without_preamble(path):
            return None
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS, force=True)


def _walk(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """All non-hidden files under ``paths`` (folders recursively, symbolic links followed, each real folder once),
    as absolute paths *as given* (a link keeps its own name and place, so outputs are named after it),
    de-duplicated, sorted; and the topmost folders that hold no file at all (an empty export is worth reporting).
    Dangling links are files too (their case fails with the reason)."""
    files: set[Path] = set()
    folders: set[Path] = set()
    for path in paths:
        if path.is_dir():
            seen: set[Path] = set()
            for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
                real = Path(dirpath).resolve()
                if real in seen:  # a link back to a folder already walked: a cycle or a second route
                    dirnames[:] = []
                    continue
                seen.add(real)
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                here = os.path.abspath(dirpath)
                folders.add(Path(here))
                files.update(Path(here, f) for f in filenames if not f.startswith("."))
        elif path.is_file() or path.is_symlink():
            files.add(Path(os.path.abspath(path)))
        else:
            raise FileNotFoundError(f"input {path} does not exist (expected a folder or a file).")
    holding = {parent for f in files for parent in f.parents}
    empty = folders - holding
    return sorted(files), sorted(f for f in empty if f.parent not in empty)


def _input_root(paths: Sequence[Path]) -> Path:
    folders = [Path(os.path.abspath(p)) if p.is_dir() else Path(os.path.abspath(p)).parent for p in paths]
    return Path(os.path.commonpath([str(f) for f in folders]))


def _file_case(path: Path, root: Path, kind: str, error: str | None = None) -> Case:
    rel = path.relative_to(root)
    stem = strip_image_suffix(rel.name)
    return Case(_safe_id(str(rel.parent / stem)), kind, (path,), root, error=error)


def _dicom_case(uid: str, files: list[Path], headers: list[pydicom.Dataset], root: Path) -> Case:
    rel_dir = files[0].parent.relative_to(root)
    number = headers[0].get("SeriesNumber", "")
    name = f"series{number}_{_short_hash(uid)}"
    name = name if str(rel_dir) == "." else f"{rel_dir}/{name}"
    modality = headers[0].get("Modality", "?")
    return Case(_safe_id(name), "dicom", tuple(files), root, series_uid=uid, description=f"DICOM {modality} series")


def _classify(path: Path, root: Path, series: dict[str, tuple[list[Path], list[pydicom.Dataset]]]) -> Case | None:
    """A case for a non-DICOM file, a broken or odd DICOM file, or ``None`` after adding ``path`` to ``series``."""
    kind = image_kind(path)
    if path.is_symlink() and not path.exists():
        return _file_case(path, root, kind or "dicom", error=f"dangling symbolic link to {os.readlink(path)}")
    if kind is not None:
        return _file_case(path, root, kind)
    if path.name.lower().endswith(COMPANION_SUFFIXES):
        return None
    try:
        header = _read_dicom_header(path)
    except Exception as err:  # a truncated or corrupt DICOM file: pydicom raises many types
        return _file_case(path, root, "dicom", error=f"unreadable DICOM file ({type(err).__name__}: {err})")
    if header is None:
        if path.name.lower().endswith(DICOM_SUFFIXES):
            return _file_case(path, root, "dicom", error="not a DICOM file (no 'DICM' marker and no DICOM header)")
        supported = ", ".join(sorted(IMAGE_SUFFIXES))
        return _file_case(path, root, "ignored", error=f"not DICOM and not an image type by suffix ({supported})")
    if str(header.get("SOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY:
        return None  # DICOMDIR: an index of the folder, the files themselves are found anyway
    uid = str(header.get("SeriesInstanceUID", "")).strip()
    if not uid:
        return _file_case(path, root, "dicom", error="DICOM file without SeriesInstanceUID (0020,000E)")
    files, headers = series.setdefault(uid, ([], []))
    files.append(path)
    headers.append(header)
    return None


def _unique_ids(cases: list[Case]) -> list[Case]:
    seen: dict[str, int] = {}
    for case in cases:
        seen[case.case_id] = seen.get(case.case_id, 0) + 1
    out = []
    for case in cases:
        if seen[case.case_id] > 1:  # e.g. a.nii and a.nii.gz side by side
            key = str(case.paths[0]) + (case.series_uid or "")
            case = Case(f"{case.case_id}_{_short_hash(key)}", case.kind, case.paths, case.root, case.series_uid,
                        case.error, case.description)
        out.append(case)
    return out


def discover_cases(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Case]:
    """Find the cases in a folder (recursively), a file, or a list of folders and files.

    DICOM files are recognised by content (the "DICM" marker or a DICOM header), not by name, and grouped by
    SeriesInstanceUID; other files by suffix (:data:`bundle.suffixes.IMAGE_SUFFIXES`). Hidden files and folders are
    skipped.

    Returns:
        cases sorted by ``case_id``; files that are not images come back as kind "ignored" (with the reason).

    Raises:
        FileNotFoundError: an input does not exist.
    """
    paths = [Path(inputs)] if isinstance(inputs, (str, os.PathLike)) else [Path(p) for p in inputs]
    if not paths:
        raise ValueError("no inputs given (expected a folder, a file or a list of files).")
    root = _input_root(paths)
    series: dict[str, tuple[list[Path], list[pydicom.Dataset]]] = {}
    files, empty_folders = _walk(paths)
    cases = [case for path in files if (case := _classify(path, root, series)) is not None]
    cases += [Case(_safe_id(str(f.relative_to(root))) if f != root else "empty_input", "empty", (f,), root,
                   error="empty folder: no files in it or below it") for f in empty_folders]
    cases += [_dicom_case(uid, members, headers, root) for uid, (members, headers) in series.items()]
    cases = _unique_ids(sorted(cases, key=lambda c: (c.case_id, str(c.paths[0]))))
    logger.info("found %d case(s) under %s", sum(c.kind != "ignored" for c in cases), root)
    return sorted(cases, key=lambda c: c.case_id)


def select_part(cases: Sequence[Case], num_parts: int = 1, part_id: int = 0) -> list[Case]:
    """The cases of part ``part_id`` of ``num_parts``: every ``num_parts``-th case of the sorted list, starting at
    ``part_id``. Every machine that sees the same folder gets the same split, parts are disjoint and together
    hold every case, and their sizes differ by at most one."""
    if num_parts < 1:
        raise ValueError(f"num_parts must be >= 1, got {num_parts}.")
    if not 0 <= part_id < num_parts:
        raise ValueError(f"part_id must be in [0, {num_parts - 1}] for num_parts={num_parts}, got {part_id}.")
    ordered = sorted(cases, key=lambda c: c.case_id)
    return ordered[part_id::num_parts]


def input_fingerprint(case: Case) -> str:
    """A hash of the case's files (path, size, modification time): ``--continue`` redoes a case whose input changed."""
    digest = hashlib.sha1()
    for path in case.paths:
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def datalist_of(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[dict[str, str]]:
    """The inference config's datalist (``[{"image": path}, ...]``) of the cases :func:`discover_cases` finds: an image
    file as itself, a DICOM series as its folder (which the ITK reader reads as one series). Label and mask files
    (``*_label.*``, ``*_mask*``) and files that are no image are left out.

    Raises:
        ValueError: nothing to segment was found.
    """
    items = []
    for case in discover_cases(inputs):
        name = case.paths[0].name.lower() if case.paths else ""
        if case.kind in ("ignored", "empty") or case.error or "_label." in name or "_mask" in name:
            continue
        items.append({"image": str(case.paths[0].parent if case.kind == "dicom" else case.paths[0])})
    if not items:
        raise ValueError(f"input {inputs} holds no image to segment (image files by suffix: "
                         f"{', '.join(sorted(IMAGE_SUFFIXES))}; DICOM series by content).")
    return items
