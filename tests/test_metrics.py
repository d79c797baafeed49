"""The shared measures (medcf.metrics) and the training engine's small pieces (medcf.training.engine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medcf.errors import InputError, OutputError
from medcf.metrics import dice, gaussian_blur, psnr
from medcf.training.engine import Deadline, RunFolder, cosine_lr, ema_update, warmup_lr


def test_dice_counts_overlap_and_calls_two_empty_masks_equal():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert dice(a, b) == 1.0
    a[0, :2] = True
    assert dice(a, b) == 0.0
    b[0, 1:3] = True
    assert dice(a, b) == pytest.approx(0.5)


def test_psnr_is_infinite_for_identical_images_and_20_db_for_an_error_of_a_tenth():
    image = np.full((8, 8), 0.5)
    assert psnr(image, image) == float("inf")
    assert psnr(image, image + 0.1) == pytest.approx(20.0)


def test_gaussian_blur_keeps_shape_total_and_a_flat_film_flat_up_to_its_border():
    flat = torch.full((1, 1, 32, 32), 0.7)
    assert torch.allclose(gaussian_blur(flat, 1.5), flat)  # replicated borders: no dark frame
    point = torch.zeros(33, 33)
    point[16, 16] = 1.0
    blurred = gaussian_blur(point, 2.0)
    assert blurred.shape == point.shape and float(blurred.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(blurred[16, 16]) < 0.1 and torch.equal(blurred, blurred.flip(0))
    assert torch.equal(gaussian_blur(point, 0.0), point)


def test_learning_rate_schedules_and_ema():
    assert warmup_lr(0, 1.0, 10) == pytest.approx(0.1) and warmup_lr(50, 1.0, 10) == 1.0
    assert cosine_lr(0, 2.0, 100) == pytest.approx(2.0) and cosine_lr(100, 2.0, 100) == pytest.approx(0.0)
    assert cosine_lr(50, 2.0, 100) == pytest.approx(1.0)
    model, ema = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
        ema.weight.fill_(0.0)
    ema_update(ema, model, 0.75)
    assert float(ema.weight.detach()) == pytest.approx(0.25)


def test_run_folder_keeps_the_newest_checkpoints_and_refuses_what_cannot_be_resumed(tmp_path):
    with pytest.raises(InputError, match="no checkpoint"):
        RunFolder(tmp_path / "run", resume=True)
    run = RunFolder(tmp_path / "run", resume=False)
    for step in (1, 2, 3, 4):
        run.save(step, {"step": step})
    assert [p.name for p in sorted(run.checkpoints.iterdir())] == ["step-0000002.pt", "step-0000003.pt",
                                                                    "step-0000004.pt"]
    assert RunFolder(tmp_path / "run", resume=True).resume_state(True)["step"] == 4
    with pytest.raises(OutputError, match="not empty"):
        RunFolder(tmp_path / "run", resume=False)


def test_deadline_none_never_passes_and_a_limit_passes_once_its_time_is_spent():
    unlimited, limited = Deadline(None), Deadline(0.5)
    assert not limited.passed()
    unlimited.started -= 3600  # as if an hour had gone by
    limited.started -= 31
    assert not unlimited.passed() and limited.passed()
