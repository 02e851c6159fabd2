"""Per-epoch learning-rate schedules against torch.optim.lr_scheduler."""
from __future__ import annotations

import pytest
import torch

from worker.engine.schedules import make_schedule
from worker.engine.spec import SCHEDULE_SPECS


def _torch_scheduler(cfg: dict, opt: torch.optim.Optimizer):
    sched = torch.optim.lr_scheduler
    match cfg["type"]:
        case "step":
            return sched.StepLR(opt, step_size=cfg["step_size"], gamma=cfg["gamma"])
        case "exponential":
            return sched.ExponentialLR(opt, gamma=cfg["gamma"])
        case "cosine":
            return sched.CosineAnnealingLR(opt, T_max=cfg["t_max"], eta_min=cfg["eta_min"])
        case "plateau":
            return sched.ReduceLROnPlateau(opt, factor=cfg["factor"], patience=cfg["patience"],
                                           threshold=cfg["threshold"], min_lr=cfg["min_lr"])


@pytest.mark.parametrize("raw", [
    {"type": "step", "step_size": 3, "gamma": 0.5},
    {"type": "exponential", "gamma": 0.9},
    {"type": "cosine", "t_max": 6, "eta_min": 0.001},
    {"type": "plateau", "factor": 0.5, "patience": 1, "monitor": "loss"},
], ids=lambda c: c["type"])
def test_matches_torch_scheduler_for_twelve_epochs(raw):
    cfg = SCHEDULE_SPECS[raw["type"]].model_validate(raw).model_dump()
    base = 0.1
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    theirs, ours = _torch_scheduler(cfg, opt), make_schedule(cfg, base)
    losses = [1.0, 0.9, 0.95, 0.95, 0.96, 0.5, 0.5, 0.5, 0.5, 0.4, 0.41, 0.42]
    for epoch, loss in enumerate(losses, start=1):
        assert ours.lr == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9), f"epoch {epoch}"
        opt.step()
        theirs.step(loss) if cfg["type"] == "plateau" else theirs.step()
        ours.step(epoch, {"loss": loss})


def test_schedule_state_round_trips():
    cfg = SCHEDULE_SPECS["plateau"].model_validate({"type": "plateau", "patience": 0, "monitor": "loss"}).model_dump()
    sched = make_schedule(cfg, 0.1)
    for epoch, loss in enumerate([1.0, 1.0, 1.0], start=1):
        sched.step(epoch, {"loss": loss})
    copy = make_schedule(cfg, 0.1)
    copy.load_state_arrays(sched.state_arrays())
    assert (copy.lr, copy.best, copy.num_bad) == (sched.lr, sched.best, sched.num_bad) and sched.lr < 0.1
