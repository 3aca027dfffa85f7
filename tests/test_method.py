"""The Method base class: checkpointed optimizer and scheduler state."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fsbench.config import MethodPreset
from fsbench.method import Method, MethodContext
from fsbench.precision import resolve_precision


def _ctx() -> MethodContext:
    return MethodContext(preset=MethodPreset(backbone="conv4", hparams=None), backbone="conv4",
                         backbone_kwargs={}, num_train_classes=4, image_shape=(3, 8, 8),
                         device=torch.device("cpu"), seed=0, way=2, shot=1,
                         precision=resolve_precision("fp32", "cpu"))


class Tiny(Method):
    def __init__(self, ctx: MethodContext, optimizer: bool = True) -> None:
        super().__init__(ctx)
        self.w = nn.Parameter(torch.ones(3))
        if optimizer:
            self.optimizer = torch.optim.Adam([self.w], lr=0.1)
            self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, 1, 0.5)

    def step(self) -> None:
        self.optimizer.zero_grad()
        (self.w ** 2).sum().backward()
        self.optimizer.step()
        self.scheduler.step()


def test_training_state_carries_optimizer_and_scheduler():
    a = Tiny(_ctx())
    for _ in range(3):
        a.step()
    state = copy.deepcopy(a.training_state())  # as a checkpoint file would: no shared tensors
    assert set(state) == {"optimizer", "scheduler", "outer_updates"}
    b = Tiny(_ctx())
    b.load_state_dict(a.state_dict())
    b.load_training_state(state)
    assert b.scheduler.last_epoch == 3 and b.optimizer.param_groups[0]["lr"] == 0.1 * 0.5 ** 3
    a.step()
    b.step()
    assert torch.equal(a.w, b.w)  # the Adam moments came back too


def test_method_without_optimizer_has_no_training_state():
    m = Tiny(_ctx(), optimizer=False)
    assert m.training_state() == {"outer_updates": 0}
    m.load_training_state({})


def test_outer_step_clips_to_episodic_grad_clip_for_every_method():
    """``episodic.grad_clip`` is applied by the base class, so no method can silently ignore it."""
    from fsbench.config import EpisodicConfig

    ctx = _ctx()
    ctx.preset = MethodPreset(backbone="conv4", hparams=None, episodic=EpisodicConfig(grad_clip=0.5))
    m = Tiny(ctx, optimizer=False)
    m.optimizer = torch.optim.SGD([m.w], lr=1.0)
    before = m.w.detach().clone()
    m.outer_step((10 * m.w).sum())  # gradient norm 10 * sqrt(3), clipped to 0.5
    assert torch.linalg.vector_norm(before - m.w.detach()).item() == pytest.approx(0.5, rel=1e-5)
