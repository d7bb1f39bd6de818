"""MONAI Label training task of one bundle task: fine-tunes from the served weights on the datastore's final
labels with the bundle's ``train.json`` and publishes the result for the inference task."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.generic import device_list, name_to_device

from .finetune import fine_tune
from .spec import ModelSpec, split_items, training_items

__all__ = ["LMNetTrainTask"]

logger = logging.getLogger(__name__)


class LMNetTrainTask(TrainTask):
    """Fine-tuning of one task of the bundle (``spec``) on the datastore's labelled images.

    It starts from the last fine-tuned weights if there are any, else from the shipped weights (checked against
    their recorded digest), else from scratch, as does ``pretrained: false`` in the request. Volumes train the
    volume task (``lgg``), 2D images the 2D one (``busi``).
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(f"Fine-tune {spec.description} on the datastore's final labels")
        self.spec = spec

    def config(self) -> dict[str, Any]:
        return {
            "device": device_list(),
            "max_epochs": 10,
            "val_split": 0.2,
            "learning_rate": 1e-4,
            "num_workers": 0,
            "pretrained": True,
        }

    def stats(self) -> dict[str, Any]:
        path = self.spec.run_dir / "train_stats.json"
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            logger.warning("%s: unreadable training statistics %s: %s", self.spec.name, path, err)
            return {}

    def _init_weights(self, pretrained: bool):
        if not pretrained:
            return None
        if self.spec.finetuned.is_file():
            return self.spec.finetuned
        if self.spec.weights.is_file():
            return self.spec.weights  # checked against its recorded digest when it is read
        return None

    def __call__(self, request, datastore: Datastore):
        req = {**self.config(), **request}
        kind = "2D images" if self.spec.dimension == 2 else "volumes"
        items = training_items(datastore.datalist(), self.spec.dimension)
        if not items:
            raise MONAILabelException(
                MONAILabelError.INVALID_INPUT,
                f"{self.spec.name} trains on {kind}, but the datastore holds no {kind} with a final label.",
            )
        train, val = split_items(items, float(req["val_split"]))
        run_dir = self.spec.run_dir / "runs" / time.strftime("%Y%m%d-%H%M%S")
        return fine_tune(
            self.spec,
            train,
            val,
            run_dir,
            init_weights=self._init_weights(str(req["pretrained"]).lower() not in ("false", "0")),
            max_epochs=int(req["max_epochs"]),
            learning_rate=float(req["learning_rate"]),
            device=name_to_device(req.get("device")),
            num_workers=int(req["num_workers"]),
        )
