"""Shipped weights: SHA-256 digests recorded in ``configs/metadata.json`` and checked whenever a shipped file loads.

``configs/metadata.json`` holds ``"weights_sha256": {"models/model.pt": "<hex>", "models/busi/model.pt": "<hex>"}``
(paths relative to the bundle root). A weights file at one of those paths must match its digest, otherwise loading
stops with an error naming the file, so a truncated download or a silently swapped file never serves predictions.
Files outside that list (a user's own checkpoints) load with their digest logged. :func:`read_state_dict`, which
every loader of the library goes through (:func:`load_weights` for a network), checks the file itself; the configs'
``CheckpointLoader`` paths go through :func:`verify_weights`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from .fileio import atomic_path

__all__ = ["METADATA_KEY", "sha256_file", "recorded_digests", "verify_weights", "record_weights", "read_state_dict",
           "load_weights", "save_weights", "unwrap", "peek_state_dict", "context_slices_of"]

logger = logging.getLogger(__name__)

METADATA_KEY = "weights_sha256"
_METADATA = Path("configs") / "metadata.json"


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of the file at ``path``, read in ``chunk_bytes`` chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def recorded_digests(bundle_root: str | os.PathLike) -> dict[str, str]:
    """``{relative path: hex digest}`` from ``<bundle_root>/configs/metadata.json`` (empty if none recorded)."""
    meta_path = Path(bundle_root) / _METADATA
    if not meta_path.is_file():
        return {}
    with open(meta_path, encoding="utf-8") as handle:
        meta = json.load(handle)
    return dict(meta.get(METADATA_KEY, {}))


def _relative_to_root(path: Path, bundle_root: Path) -> str | None:
    try:
        return path.resolve().relative_to(bundle_root.resolve()).as_posix()
    except ValueError:
        return None


def _owning_bundle(path: Path) -> Path | None:
    """The nearest folder above ``path`` that holds ``configs/metadata.json`` (the bundle the file lies in)."""
    for parent in path.resolve().parents:
        if (parent / _METADATA).is_file():
            return parent
    return None


def verify_weights(path: str | os.PathLike, bundle_root: str | os.PathLike | None = None) -> str:
    """Check ``path`` against the digest recorded for it in the bundle metadata and return ``path`` unchanged.

    ``bundle_root`` defaults to the bundle the file lies in (the nearest parent folder with ``configs/metadata.json``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a shipped weights file whose SHA-256 differs from the recorded one.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"weights file {file} does not exist (train the bundle or pass the checkpoint path, e.g. --ckpt_path)."
        )
    root = Path(bundle_root) if bundle_root is not None else _owning_bundle(file)
    relative = _relative_to_root(file, root) if root is not None else None
    expected = recorded_digests(root).get(relative) if relative is not None else None
    actual = sha256_file(file)
    if expected is None:
        logger.info("weights %s (sha256 %s) are not a shipped file of this bundle: not checked.", file, actual)
    elif actual != expected:
        raise ValueError(
            f"weights file {file} is corrupt or was replaced: its sha256 is {actual}, but {root / _METADATA} "
            f"records {expected} for {relative}."
        )
    else:
        logger.info("weights %s match the recorded sha256 %s.", file, expected)
    return str(path)


def record_weights(bundle_root: str | os.PathLike, relative_path: str) -> str:
    """Record the SHA-256 of ``<bundle_root>/<relative_path>`` in the bundle metadata (written atomically).

    Returns the digest.
    """
    root = Path(bundle_root)
    digest = sha256_file(root / relative_path)
    meta_path = root / _METADATA
    with open(meta_path, encoding="utf-8") as handle:
        meta = json.load(handle)
    digests = dict(meta.get(METADATA_KEY, {}))
    digests[Path(relative_path).as_posix()] = digest
    meta[METADATA_KEY] = dict(sorted(digests.items()))
    with atomic_path(meta_path.resolve()) as tmp:  # metadata.json at the top is a link to this file
        tmp.write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")
    return digest


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The network state dict stored in ``path`` (checked with :func:`verify_weights` first): a bare state dict or
    a checkpoint holding one under ``"model"``, ``"network"`` or ``"state_dict"``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a shipped file that fails its digest, or a file that holds no state dict.
    """
    verify_weights(path)
    return _state_dict_in(torch.load(Path(path), map_location="cpu", weights_only=True), path)


def _state_dict_in(state: object, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The network state dict in what ``torch.load`` read from ``path``: a bare state dict or a checkpoint holding
    one under ``"model"``, ``"network"`` or ``"state_dict"``."""
    if isinstance(state, dict):
        for key in ("model", "network", "state_dict"):
            if isinstance(state.get(key), dict):
                return state[key]
        return state
    raise ValueError(f"weights file {path} holds a {type(state).__name__}, not a state dict.")


def load_weights(network: torch.nn.Module, path: str | os.PathLike | None) -> torch.nn.Module:
    """Load the state dict in ``path`` strictly into ``network`` (unwrapped from ``DistributedDataParallel``
    first), after the digest check of :func:`read_state_dict`; the parameters keep their device and memory format.
    ``path`` empty or ``None`` leaves ``network`` as it is (the configs' ``init_weights`` default: train from a
    random initialisation). Returns ``network``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a shipped file that fails its digest, or weights that do not fit ``network`` (keys, shapes).
    """
    if not path:
        return network
    from .networks.ensemble import ProbabilityEnsemble, member_count

    target = unwrap(network)
    state = read_state_dict(path)
    try:
        members = member_count(state)
    except ValueError:
        members = 0  # reported by load_state_dict below, with the keys
    if members and not isinstance(target, ProbabilityEnsemble):
        raise ValueError(f"weights file {path} holds an ensemble of {members} networks (scripts/build_ensemble.py), "
                         f"not the weights of one {type(target).__name__}: run it through the inference config, or "
                         "give one member's weights file (python -m scripts.extract_member --weights <file> --member 0 "
                         "--output <member file>).")
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as err:  # missing / unexpected keys, shape mismatches
        raise ValueError(f"weights file {path} does not fit {type(target).__name__}: {err}") from err
    logger.info("loaded the weights in %s", path)
    return network


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """``network`` without its ``DistributedDataParallel`` wrapper (the module whose state dict ships)."""
    return network.module if isinstance(network, torch.nn.parallel.DistributedDataParallel) else network


def save_weights(state: dict[str, torch.Tensor] | torch.nn.Module, path: str | os.PathLike) -> Path:
    """Save a state dict (or a network's, unwrapped from DDP) to ``path`` atomically, as contiguous CPU tensors, so
    a reader never sees a half-written file and the file loads on any device. Returns the path."""
    if isinstance(state, torch.nn.Module):
        state = unwrap(state).state_dict()
    with atomic_path(path) as tmp:
        torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, tmp)
    return Path(path)


def peek_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` memory-mapped, for its keys and shapes: its tensor data is not read, and the file is
    not digest-checked unless it cannot be read (the loader that uses the weights reads and checks it itself), so a
    damaged shipped file is reported as such, not as an unpickling error.

    Raises:
        ValueError: an unreadable file (a shipped one that fails its digest says so).
    """
    try:
        return _state_dict_in(torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True), path)
    except Exception as err:  # any unpickling failure: the digest check names the cause where it can
        verify_weights(path)
        raise ValueError(f"weights file {path} cannot be read: {err}") from err


def context_slices_of(path: str | os.PathLike | None) -> int:
    """The ``context_slices`` (neighbours on each side of a slice, 2.5D input) that the weights in ``path`` were
    trained with, read from the input channels C of their first convolution (the first tensor of three or more
    dimensions): ``(C - 1) // 2``, so one-channel weights give 0 and 3-channel weights 1. A missing or empty ``path``
    gives 0 (the loader then reports the missing file). For networks whose input channels are not slices (RGB
    images) the setting must be given instead (the Kvasir overlay pins it).

    Only the shapes are read (:func:`peek_state_dict`).

    Raises:
        ValueError: an unreadable file (a shipped one that fails its digest says so), weights with no convolution,
            or an even number of input channels (not a slice and its neighbours).
    """
    if not path or not Path(path).is_file():
        return 0
    for value in peek_state_dict(path).values():
        if value.dim() >= 3:
            channels = int(value.shape[1])
            if channels % 2 == 0:
                raise ValueError(f"weights file {path} takes {channels} input channels: not a slice and its "
                                 "neighbours; set context_slices explicitly.")
            return (channels - 1) // 2
    raise ValueError(f"weights file {path} holds no convolution to read the input channels from; set context_slices "
                     "explicitly.")
