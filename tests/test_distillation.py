"""Distillation from an ensemble of teachers (``bundle.distillation``, ``configs/distill.json``): the loss is the
supervised loss plus the KL divergence from the teachers' mean probabilities, computed by their deployed form on the
batch the trainer prepared; a training run with the overlay trains on it."""

from __future__ import annotations

import math

import pytest
import torch

from bundle.distillation import EnsembleDistillation, teacher_network
from bundle.losses import WeightedCEDiceLoss
from bundle.networks import LMNet
from tests.helpers import checked_workflow, randomize_batchnorm

SMALL = {"features": (8, 16, 32, 64, 128), "lft_heads": 2, "gft_heads": 8}


def _teacher_file(path, seed: int) -> str:
    torch.manual_seed(seed)
    torch.save(randomize_batchnorm(LMNet(**SMALL), seed).state_dict(), path)
    return str(path)


def _batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(2, 1, 32, 32, generator=g), "label": (torch.rand(2, 1, 32, 32, generator=g) > 0.7)
            .float()}


def test_teacher_is_the_weights_training_form_in_eval_mode(tmp_path):
    path = _teacher_file(tmp_path / "t.pt", 1)
    reference = LMNet(**SMALL)
    reference.load_state_dict(torch.load(path, weights_only=True))
    reference.eval()
    teacher = teacher_network(LMNet(**SMALL), path)
    x = _batch()["image"]
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(teacher(x), expected, atol=1e-4 * float(expected.abs().max()), rtol=0)


def test_loss_adds_the_divergence_from_the_teachers_mean(tmp_path):
    paths = [_teacher_file(tmp_path / f"t{i}.pt", i) for i in (1, 2)]
    student = LMNet(**SMALL)
    base = WeightedCEDiceLoss((1.0, 1.0), batch_dice=True)
    distill = EnsembleDistillation(base, student, paths, weight=0.5)
    assert len(distill.teachers) == 2
    batch = _batch()
    images, labels = distill.prepare_batch(batch)
    assert torch.equal(images, batch["image"]) and torch.equal(labels, batch["label"])

    logits = student(images)
    loss = distill(logits, labels)
    # the same divergence written out from the two teachers' own (training-form, eval-mode) forwards
    probabilities = []
    for path in paths:
        teacher = LMNet(**SMALL)
        teacher.load_state_dict(torch.load(path, weights_only=True))
        with torch.no_grad():
            probabilities.append(torch.softmax(teacher.eval()(images), 1))
    p = (probabilities[0] + probabilities[1]) / 2
    kl = (p * (p.log() - torch.log_softmax(logits, 1))).sum(1).mean()
    expected = base(logits, labels) + 0.5 * kl
    torch.testing.assert_close(loss, expected, atol=1e-4, rtol=1e-4)
    assert kl > 0

    loss.backward()  # the divergence reaches the student's parameters, not the teachers'
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    assert not any(p.requires_grad for t in distill.teachers for p in t.parameters())


def test_without_prepared_batch_the_loss_refuses(tmp_path):
    student = LMNet(**SMALL)
    distill = EnsembleDistillation(WeightedCEDiceLoss(), student, [_teacher_file(tmp_path / "t.pt", 1)])
    batch = _batch()
    with pytest.raises(RuntimeError, match="no teacher probabilities"):
        distill(student(batch["image"]), batch["label"])
    distill.prepare_batch(batch)
    distill(student(batch["image"]), batch["label"])
    with pytest.raises(RuntimeError, match="prepare_batch"):  # one divergence per prepared batch
        distill(student(batch["image"]), batch["label"])


def test_without_teachers_it_is_the_supervised_loss():
    student = LMNet(**SMALL)
    base = WeightedCEDiceLoss()
    distill = EnsembleDistillation(base, student, [])
    images, labels = distill.prepare_batch(_batch())
    logits = student(images)
    assert torch.equal(distill(logits, labels), base(logits, labels))


def test_teachers_that_do_not_fit_are_refused(tmp_path):
    path = _teacher_file(tmp_path / "small.pt", 1)
    with pytest.raises(ValueError, match="small.pt does not fit LMNet"):
        EnsembleDistillation(WeightedCEDiceLoss(), LMNet(), [path])
    with pytest.raises(ValueError, match="weight"):
        EnsembleDistillation(WeightedCEDiceLoss(), LMNet(**SMALL), [], weight=-1)


def test_training_with_the_overlay_distills(synthetic_lgg, tmp_path):
    """One tiny epoch of ``train.json`` + ``distill.json`` with two teacher files: the trainer's loss is the
    distillation and its batches come from the distillation's ``prepare_batch`` (the loss refuses a batch it did not
    prepare, so a finished epoch means every step distilled)."""
    teachers = [_teacher_file(tmp_path / f"t{i}.pt", i) for i in (1, 2)]
    small = {f"network_def#{k}": list(v) if isinstance(v, tuple) else v for k, v in SMALL.items()}
    wf = checked_workflow(
        ["train.json", "distill.json"], "train", dataset_dir=str(synthetic_lgg), output_dir=str(tmp_path / "train"),
        datalist=str(tmp_path / "datalist.json"), roi_size=[32, 32], num_workers=0, sw_batch_size=8, max_epochs=1,
        val_interval=1, batch_size=2, num_samples=2, context_slices=0, distill_teachers=teachers, distill_weight=2.0,
        **small)
    trainer = wf.trainer
    distill = wf.parser.get_parsed_content("distillation")
    assert trainer.loss_function is distill and len(distill.teachers) == 2 and distill.weight == 2.0
    assert trainer.prepare_batch == distill.prepare_batch
    wf.run()
    wf.finalize()
    assert trainer.state.epoch == 1 and math.isfinite(float(trainer.state.output[0]["loss"]))
    assert (tmp_path / "train" / "checkpoints" / "model_final.pt").is_file()
