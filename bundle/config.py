"""The bundle's configs as Python sees them: the parsed config of a task (base config + task overlay + overrides),
and the ``monai.bundle run`` command line that runs it in a subprocess.

Every caller that needs the inference or training pipeline (the segmenter, the predictor, MONAI Label, the
scripts) goes through :func:`bundle_parser` or :func:`bundle_run_command`, so the configs stay the only definition.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from monai.bundle import ConfigParser

from .tasks import config_files

__all__ = ["bundle_parser", "inference_parser", "parsed", "bundle_run_command", "override_value"]


def bundle_parser(
    bundle_root: str | os.PathLike, task: str, kind: str, overrides: Mapping[str, object] | None = None,
    extra_configs: Sequence[str | os.PathLike] = (),
) -> ConfigParser:
    """The parsed configs of ``task`` for workflow ``kind`` ("inference", "train", ...): ``configs/<kind>.json``, the
    task's overlay, ``extra_configs``, the metadata (as ``_meta_``), then ``overrides`` (config id -> value, as
    ``monai.bundle run --id value`` sets them), with ``bundle_root`` set to the bundle's absolute path and the
    config's ``initialize`` run (the bundle's package importable, seeds set).

    Raises:
        FileNotFoundError: ``bundle_root`` holds no ``configs/<kind>.json``.
    """
    root = Path(bundle_root).resolve()
    parser = ConfigParser()
    parser.read_config([str(p) for p in (*config_files(root, task, kind), *extra_configs)])
    parser.read_meta(str(root / "configs" / "metadata.json"))  # "_meta_", as monai.bundle run loads it
    parser["bundle_root"] = str(root)
    for key, value in (overrides or {}).items():
        parser[key] = value
    if "initialize" in parser:
        parser.get_parsed_content("initialize")
    return parser


def inference_parser(
    bundle_root: str | os.PathLike, task: str, device: object = "auto", weights: str | os.PathLike | None = None,
    overrides: Mapping[str, object] | None = None,
) -> ConfigParser:
    """:func:`bundle_parser` of the task's inference configs with ``overrides``; ``weights`` replaces ``ckpt_path``
    and a ``device`` other than "auto" replaces the config's device choice."""
    values = dict(overrides or {})
    if weights is not None:
        values["ckpt_path"] = str(weights)
    if device is not None and str(device) != "auto":
        values["device"] = f"$torch.device({str(device)!r})"
    return bundle_parser(bundle_root, task, "inference", values)


def parsed(parser: ConfigParser, config_id: str) -> object:
    """``parser.get_parsed_content(config_id)``, with the error a user can act on: MONAI wraps an error raised while
    building a component ("Failed to instantiate ...") in a RuntimeError; the innermost ``ValueError`` or
    ``FileNotFoundError`` (a missing or replaced weights file, a bad setting) is raised instead."""
    try:
        return parser.get_parsed_content(config_id)
    except RuntimeError as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, (ValueError, FileNotFoundError)):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from err


def override_value(value: object) -> str:
    """``value`` as one ``monai.bundle run --id VALUE`` argument: strings as typed, everything else as JSON (which the
    command line's parser reads back as the same list / number / bool)."""
    return value if isinstance(value, str) else json.dumps(value)


def bundle_run_command(
    bundle_root: str | os.PathLike, task: str, kind: str, overrides: Mapping[str, object] | None = None,
    extra_configs: Sequence[str | os.PathLike] = (), run_id: str | None = None,
) -> list[str]:
    """The ``python -m monai.bundle run`` command line of :func:`bundle_parser`'s config: the same config files in
    the same order, ``bundle_root``, then one ``--id value`` per override (see :func:`override_value`); ``run_id``
    picks another run list than ``run`` (e.g. ``"predict"``)."""
    root = Path(bundle_root).resolve()
    files = [str(p) for p in (*config_files(root, task, kind), *extra_configs)]
    cmd = [sys.executable, "-m", "monai.bundle", "run"]
    if run_id is not None:
        cmd.append(run_id)
    cmd += ["--config_file", json.dumps(files), "--bundle_root", str(root)]
    for key, value in (overrides or {}).items():
        cmd += [f"--{key}", override_value(value)]
    return cmd
