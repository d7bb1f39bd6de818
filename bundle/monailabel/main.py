"""The MONAI Label app of the LM-Net bundle: ``monailabel start_server --app bundle/monailabel --studies DIR``
(or ``scripts/start_monailabel.sh``).

One segmentation model and one trainer per bundle task: ``lmnet_lgg`` (FLAIR volumes slice by slice; also 2D
images) and ``lmnet_busi`` (2D ultrasound). Options (``--conf NAME VALUE``):

- ``bundle_root``: the bundle to serve (default: the repository this app lies in);
- ``models``: comma-separated tasks to serve (default: all, e.g. ``lgg,busi``);
- ``output_dir``: where fine-tuned weights and training runs go (default: ``<bundle_root>/outputs/monailabel``);
- ``preload``: load the networks at start-up (default: false);
- ``skip_trainers``: serve inference only (default: false);
- ``config_overrides``: settings of the inference configs as JSON, the way ``monai.bundle run --id value`` and
  ``scripts.predict --id value`` set them (e.g. ``'{"tta_flips": [], "min_lesion_size": 50}'``; default none).

A model is listed in ``/info/`` once weights exist for it: the shipped ones in ``models/`` or ones that a training
run published.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:  # MONAI Label imports this file by path: make the bundle's package importable
    sys.path.insert(0, str(_REPO))

from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.tasks.activelearning.first import First  # noqa: E402
from monailabel.tasks.activelearning.random import Random  # noqa: E402
from monailabel.utils.others.generic import strtobool  # noqa: E402

from bundle.monailabel.infer import LMNetInferTask  # noqa: E402
from bundle.monailabel.spec import model_specs  # noqa: E402
from bundle.monailabel.train import LMNetTrainTask  # noqa: E402

logger = logging.getLogger(__name__)


class LMNetApp(MONAILabelApp):
    """MONAI Label app serving the bundle's tasks (see the module docstring for the options)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundle_root = Path(conf.get("bundle_root") or _REPO).resolve()
        output_dir = Path(conf.get("output_dir") or self.bundle_root / "outputs" / "monailabel")
        tasks = [t.strip() for t in conf.get("models", "").split(",") if t.strip() and t.strip() != "all"]
        self.specs = model_specs(self.bundle_root, output_dir, tasks or None)
        with open(self.bundle_root / "configs" / "metadata.json", encoding="utf-8") as handle:
            meta = json.load(handle)
        logger.info("LM-Net bundle %s (version %s): models %s", self.bundle_root, meta["version"], list(self.specs))
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"LM-Net ({meta.get('name', 'lesion segmentation')})",
            description=meta.get("description", ""),
            version=meta["version"],
        )

    def init_infers(self):
        preload = strtobool(self.conf.get("preload", "false"))
        overrides = json.loads(self.conf.get("config_overrides") or "{}")
        if not isinstance(overrides, dict):
            raise ValueError(f"--conf config_overrides must be a JSON object of config ids, got {overrides!r}.")
        infers = {}
        for name, spec in self.specs.items():
            has_weights = spec.weights.is_file() or spec.finetuned.is_file()
            if not has_weights:  # registered all the same: /info/ lists it once a training run publishes weights
                logger.warning("%s: no weights yet (%s); train it to serve it", name, spec.weights)
            infers[name] = LMNetInferTask(spec, preload=preload and has_weights, overrides=overrides)
        return infers

    def init_trainers(self):
        if strtobool(self.conf.get("skip_trainers", "false")):
            return {}
        return {name: LMNetTrainTask(spec) for name, spec in self.specs.items()}

    def init_strategies(self):
        return {"random": Random(), "first": First()}
