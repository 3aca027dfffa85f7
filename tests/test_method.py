"""The Method base class: checkpointed optimizer and scheduler state."""

from __future__ import annotations

import copy

import torch
from torch import nn

from fsbench.config import MethodPreset
from fsbench.method import Method, MethodContext


def _ctx() -> MethodContext:
    return MethodContext(preset=MethodPreset(backbone="conv4", hparams=None), backbone="conv4",
                         backbone_kwargs={}, num_train_classes=4, image_shape=(3, 8, 8),
                         device=torch.device("cpu"), seed=0, way=2, shot=1)


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
    assert set(state) == {"optimizer", "scheduler"}
    b = Tiny(_ctx())
    b.load_state_dict(a.state_dict())
    b.load_training_state(state)
    assert b.scheduler.last_epoch == 3 and b.optimizer.param_groups[0]["lr"] == 0.1 * 0.5 ** 3
    a.step()
    b.step()
    assert torch.equal(a.w, b.w)  # the Adam moments came back too


def test_method_without_optimizer_has_no_training_state():
    m = Tiny(_ctx(), optimizer=False)
    assert m.training_state() == {}
    m.load_training_state({})
