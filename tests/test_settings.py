"""Boolean settings as the command line passes them: ``--name false`` arrives as the string "false"."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine

from bundle.settings import as_bool
from bundle.training_state import enable_resume
from bundle.transforms import KeepLargestLesiond


@pytest.mark.parametrize("value,expected", [
    (True, True), (False, False), ("false", False), ("False", False), ("TRUE", True), ("no", False), ("yes", True),
    ("0", False), ("1", True),
])
def test_as_bool_reads_command_line_words(value, expected):
    assert as_bool(value, "x") is expected


@pytest.mark.parametrize("value", ["flase", "", "2", 2, None, [], 0.5, "on"])
def test_as_bool_refuses_anything_else_naming_the_setting(value):
    with pytest.raises(ValueError, match="'keep_largest_component' must be true or false"):
        as_bool(value, "keep_largest_component")


def test_keep_largest_component_false_from_the_command_line_keeps_every_component():
    label = torch.zeros(1, 8, 8, 1)
    label[0, 1:3, 1:3] = 1  # the larger component
    label[0, 6, 6] = 1  # a second, smaller one
    kept = KeepLargestLesiond("label", enabled="false")({"label": label.clone()})["label"]
    assert torch.equal(kept, label)
    pruned = KeepLargestLesiond("label", enabled="true")({"label": label.clone()})["label"]
    assert pruned.sum() == 4 and pruned[0, 6, 6] == 0


@pytest.mark.parametrize("resume,loaded", [("false", False), ("true", True), (False, False), (True, True)])
def test_resume_false_from_the_command_line_starts_over(tmp_path, resume, loaded):
    saved = torch.nn.Linear(2, 1)
    torch.nn.init.constant_(saved.weight, 7.0)
    torch.save({"model": saved.state_dict()}, tmp_path / "latest_checkpoint_3.pt")
    network = torch.nn.Linear(2, 1)
    torch.nn.init.zeros_(network.weight)
    trainer = Engine(lambda engine, batch: None)
    enable_resume(trainer, tmp_path, {"model": network}, resume=resume, save=False)
    trainer.run([0], max_epochs=1)
    assert torch.all(network.weight == (7.0 if loaded else 0.0))
