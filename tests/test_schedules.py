"""One name, one meaning: ``hparams.lr_decay_every`` (and ``lr_decay``) of every method that has
them (fsbench.learners.schedules): 0 switches the decay off, k > 0 multiplies the outer learning
rate by ``lr_decay`` every k outer updates, and one validation rejects what has no meaning."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest
import torch

from fsbench.backbones import create_backbone
from fsbench.errors import ConfigError
from fsbench.hookspecs import MethodRecord
from fsbench.learners.schedules import check_step_decay, step_decay
from fsbench.method import Method, MethodContext
from fsbench.plugins import default_registry
from fsbench.precision import resolve_precision

CPU = torch.device("cpu")


def _with_schedule() -> dict[str, MethodRecord]:
    out = {}
    for name, record in default_registry().methods.items():
        hp = record.presets["smoke"].hparams
        names = {f.name for f in dataclasses.fields(hp)} if dataclasses.is_dataclass(hp) else set()
        if {"lr_decay", "lr_decay_every"} <= names:
            out[name] = record
    return out


def _build(record: MethodRecord, **hparams) -> Method:
    preset = record.presets["smoke"]
    preset = replace(preset, hparams=replace(preset.hparams, **hparams))
    kwargs = dict(preset.backbone_kwargs)
    state = create_backbone(preset.backbone, **kwargs).state_dict() if preset.pretrain else None
    ctx = MethodContext(preset=preset, backbone=preset.backbone, backbone_kwargs=kwargs,
                        num_train_classes=10, image_shape=(3, 16, 16), device=CPU, seed=0, way=5,
                        shot=1, precision=resolve_precision("fp32", CPU), pretrained=state)
    return record.cls(ctx)


def _lrs(method: Method) -> list[float]:
    return [group["lr"] for group in method.optimizer.param_groups]


def test_the_bundled_methods_with_a_step_decay_are_all_checked():
    assert {"protonet", "mtl", "mtl_ht", "scratch", "tadam"} <= set(_with_schedule())


@pytest.mark.parametrize("name", sorted(_with_schedule()))
def test_lr_decay_every_zero_switches_the_decay_off(name):
    method = _build(_with_schedule()[name], lr_decay_every=0, lr_decay=0.5)
    before = _lrs(method)
    for _ in range(5):
        method.apply_outer_update()  # no gradients: only the schedule moves
    assert method.scheduler is None and _lrs(method) == before


@pytest.mark.parametrize("name", sorted(_with_schedule()))
def test_lr_decay_every_k_multiplies_the_rate_every_k_outer_updates(name):
    hp = {"lr_decay_every": 2, "lr_decay": 0.5}
    if name == "tadam":
        hp["lr_milestones"] = ()  # TADAM's other schedule, exclusive with this one
    method = _build(_with_schedule()[name], **hp)
    before = _lrs(method)
    seen = []
    for _ in range(4):
        method.apply_outer_update()
        seen.append(_lrs(method))
    for lrs, factor in zip(seen, (1.0, 0.5, 0.5, 0.25), strict=True):  # after updates 1, 2, 3, 4
        assert lrs == pytest.approx([lr * factor for lr in before])


@pytest.mark.parametrize("name", sorted(_with_schedule()))
@pytest.mark.parametrize(("change", "match"), [
    ({"lr_decay_every": -1}, "hparams.lr_decay_every must be >= 0"),
    ({"lr_decay": 0.0}, r"hparams.lr_decay must be in \(0, 1\]"),
    ({"lr_decay": 1.5}, r"hparams.lr_decay must be in \(0, 1\]"),
])
def test_one_validation_names_the_setting(name, change, match):
    with pytest.raises(ConfigError, match=match):
        _build(_with_schedule()[name], **change)


def test_the_helper_alone():
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(params, lr=1.0)
    assert step_decay(opt, 0.5, 0) is None
    sched = step_decay(torch.optim.SGD(params, lr=1.0), 0.1, 1, floors=[0.05])
    for _ in range(3):
        sched.optimizer.step()
        sched.step()
    assert sched.get_last_lr() == pytest.approx([0.05])  # 0.1 ** 3 stopped at the floor
    check_step_decay(replace_decay(0.5, 0))
    with pytest.raises(ConfigError):
        check_step_decay(replace_decay(0.5, -2))


def replace_decay(decay: float, every: int):
    @dataclasses.dataclass(frozen=True)
    class Hp:
        lr_decay: float
        lr_decay_every: int

    return Hp(decay, every)
