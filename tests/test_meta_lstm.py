"""Meta-LSTM (plugins/meta_lstm): starts as SGD, gates learn, BN statistics, smoke learning, resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datagen import random_tasks
from smoke_resume import assert_smoke_learns_and_resumes, assert_training_state_round_trips

from fsbench.config import EpisodicConfig, MethodPreset
from fsbench.errors import ConfigError
from fsbench.method import MethodContext
from fsbench.precision import resolve_precision
from fsbench_plugins.meta_lstm import MetaLSTM, MetaLSTMHparams, preprocess

WAY = 5


def make(hp: MetaLSTMHparams | None = None, shot: int = 1) -> MetaLSTM:
    torch.manual_seed(0)
    kwargs = {"width": 4}
    preset = MethodPreset(backbone="conv4", backbone_kwargs=kwargs, hparams=hp or MetaLSTMHparams(epochs=2),
                          episodic=EpisodicConfig(grad_clip=0.25))
    ctx = MethodContext(preset=preset, backbone="conv4", backbone_kwargs=kwargs, num_train_classes=10,
                        image_shape=(3, 16, 16), device=torch.device("cpu"), seed=0, way=WAY, shot=shot,
                        precision=resolve_precision("fp32", "cpu"))
    return MetaLSTM(ctx)


def tasks(t: int = 2, shot: int = 1, query: int = 2, size: int = 16, seed: int = 0):
    return random_tasks(WAY, t, shot, query, size, seed)


def sgd_reference(method: MetaLSTM, support, support_y) -> tuple[torch.Tensor, torch.Tensor]:
    """theta_0 and the plain autograd gradient of the learner's support loss (batch statistics)."""
    learner = method.learner.train()
    loss = F.cross_entropy(learner(support), support_y)
    grads = torch.autograd.grad(loss, list(learner.parameters()))
    theta0 = torch.cat([p.detach().flatten() for p in learner.parameters()])
    return theta0, torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize("divide", [True, False])
@pytest.mark.parametrize("inner_lr", [0.01, 0.1])
def test_first_update_is_a_step_of_the_input_gate_lr_on_the_reference_gradient(inner_lr, divide):
    """The reference divides the mean-loss gradient by the batch size again (meta-learner-lstm.lua:64):
    with 5 support images the step is 5x smaller; ``grad_batch_divide=False`` takes the mean-loss one."""
    method = make(MetaLSTMHparams(epochs=2, inner_lr=inner_lr, forget_bias=30.0, grad_batch_divide=divide))
    support, sy, _, _ = tasks(t=1)
    theta0, grad = sgd_reference(method, support[0], sy[0])
    with torch.no_grad():
        theta1, _ = method.adapt(support[0], sy[0], updates=1)
    step = inner_lr * grad / (support.shape[1] if divide else 1)
    torch.testing.assert_close(theta1, theta0 - step, rtol=1e-5, atol=1e-7)


def test_default_init_is_sgd_with_a_slight_shrinkage():
    """Reference init: forget gate sigmoid(5) = 0.993 (close to plain gradient descent), input
    gate exactly inner_lr: theta_1 = 0.993 * theta_0 - lr * grad / batch."""
    hp = MetaLSTMHparams()
    method = make(hp)
    support, sy, _, _ = tasks(t=1)
    theta0, grad = sgd_reference(method, support[0], sy[0])
    with torch.no_grad():
        theta1, _ = method.adapt(support[0], sy[0], updates=1)
    f = 1 / (1 + math.exp(-hp.forget_bias))
    assert f > 0.99
    torch.testing.assert_close(theta1, f * theta0 - hp.inner_lr * grad / WAY, rtol=1e-5, atol=1e-7)


def test_the_meta_learner_is_fed_the_divided_gradient():
    method = make()
    support, sy, _, _ = tasks(t=1)
    _, grad = sgd_reference(method, support[0], sy[0])
    seen = []
    real = method.cell.forward
    method.cell.forward = lambda inputs, theta, g, state: seen.append((inputs, g)) or real(inputs, theta, g, state)
    with torch.no_grad():
        method.adapt(support[0], sy[0], updates=1)
    [(inputs, fed)] = seen
    torch.testing.assert_close(fed, grad / WAY, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(inputs[:, 2:], preprocess(grad / WAY, method.hp.preprocess_p), rtol=1e-4, atol=1e-6)


def test_previous_gates_are_fed_before_their_sigmoid():
    """lstm-helper.lua:116-119: the state keeps the gates' pre-activations and the next gate
    layer sees them; ``gates_pre_sigmoid=False`` feeds the sigmoid instead (the paper's text)."""
    from fsbench_plugins.meta_lstm import MetaLearnerCell

    theta, grad, inputs = torch.ones(3), torch.full((3,), 0.5), torch.zeros(3, 4)
    second = {}
    for pre in (True, False):
        torch.manual_seed(0)
        cell = MetaLearnerCell(hidden=4, inner_lr=0.01, forget_bias=5.0, gates_pre_sigmoid=pre)
        with torch.no_grad():
            cell.input_gate.weight[0, -1] = cell.forget_gate.weight[0, -1] = -1.0  # on the previous gate
            _, state = cell(inputs, theta, grad, cell.initial_state(3, theta))
            (h, _), i_prev, f_prev = state
            x = torch.cat([h, theta[:, None], torch.zeros(3, 1)], 1)
            i_pre, f_pre = cell.input_gate(x).squeeze(1), cell.forget_gate(x).squeeze(1)
            expected = (i_pre, f_pre) if pre else (torch.sigmoid(i_pre), torch.sigmoid(f_pre))
            torch.testing.assert_close(i_prev, expected[0])
            torch.testing.assert_close(f_prev, expected[1])
            second[pre], _ = cell(inputs, theta, grad, state)
    # f's pre-activation is about 5 (its bias), its sigmoid about 1: the next update differs.
    assert not torch.allclose(second[True], second[False])


def test_batch_norm_follows_the_reference_configurations():
    for shot, momentum in ((1, 0.9), (5, 0.95)):
        bns = [m for m in make(shot=shot).learner.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert bns and all(m.momentum == momentum and m.eps == 1e-3 for m in bns)
    bns = [m for m in make(MetaLSTMHparams(epochs=2, bn_momentum=0.5)).learner.modules()
           if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.momentum == 0.5 for m in bns)


def test_the_paper_preset_follows_the_reference_code_and_the_cpu_presets_declare_the_gradient():
    from fsbench_plugins.meta_lstm import PRESETS

    paper = PRESETS["paper"].hparams
    assert paper.grad_batch_divide and paper.gates_pre_sigmoid and paper.bn_momentum is None
    assert paper.bn_eps == 1e-3
    for name in ("quick", "smoke"):
        assert not PRESETS[name].hparams.grad_batch_divide
        assert PRESETS[name].sources["hparams.grad_batch_divide"].startswith("DEVIATION:")


def test_one_meta_step_changes_the_gates_and_the_initial_parameters():
    method = make().train()
    cell = method.cell
    before = {k: v.clone() for k, v in method.state_dict().items()}
    out = method.meta_train_step(*tasks(), WAY)
    assert out.loss.shape == () and out.query_logits.shape == (2, WAY * 2, WAY)
    after = method.state_dict()
    for key in ("cell.input_gate.weight", "cell.input_gate.bias", "cell.forget_gate.weight",
                "cell.forget_gate.bias"):
        assert not torch.equal(before[key], after[key]), key
    # the learner's initial parameters (the initial cell state) are meta-learned too
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("learner.") and "running" not in k)
    # so the gates' output for the same input changed
    h = torch.zeros(3, cell.lstm.hidden_size)
    x = torch.cat([h, torch.zeros(3, 2)], 1)
    assert not torch.allclose(torch.sigmoid(cell.input_gate(x)), torch.full((3, 1), method.hp.inner_lr))


def test_first_order_the_learner_gradient_is_not_differentiated():
    method = make()
    support, sy, _, _ = tasks(t=1)
    theta = method.initial_parameters()
    assert theta.requires_grad
    loss, grad = method.learner_gradient(theta, method.fresh_buffers(), support[0], sy[0])
    assert not grad.requires_grad and not loss.requires_grad


def test_preprocessing_follows_andrychowicz():
    x = torch.tensor([1.0, -2.0, 1e-6, -1e-6, 0.0])
    out = preprocess(x, 10.0)
    torch.testing.assert_close(out[0], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(out[1], torch.tensor([math.log(2.0) / 10, -1.0]))
    torch.testing.assert_close(out[2], torch.tensor([-1.0, 1e-6 * math.exp(10)]))
    torch.testing.assert_close(out[3], torch.tensor([-1.0, -1e-6 * math.exp(10)]))
    torch.testing.assert_close(out[4], torch.tensor([-1.0, 0.0]))


def test_test_time_queries_use_the_support_running_statistics():
    """At test the queries are normalised with this episode's support statistics (the reference's
    evaluate mode), so a query's logits do not depend on the other queries; in meta-training they
    use the query batch's statistics."""
    method = make().eval()
    support, sy, query, _ = tasks(t=1, query=3)
    with torch.no_grad():
        all_q = method.adapt_and_predict(support, sy, query, WAY)
        one_q = method.adapt_and_predict(support, sy, query[:, :1], WAY)
    torch.testing.assert_close(all_q[:, :1], one_q, rtol=1e-5, atol=1e-5)
    method.train()
    with torch.no_grad():
        train_all = method.task_logits(support[0], sy[0], query[0])
        train_one = method.task_logits(support[0], sy[0], query[0, :2])
    assert not torch.allclose(train_all[:2], train_one, atol=1e-4)


def test_adaptation_schedule_follows_the_reference_configuration():
    assert MetaLSTMHparams().resolved_epochs(1) == 12
    assert MetaLSTMHparams().resolved_epochs(5) == 8
    method = make(MetaLSTMHparams(epochs=3, inner_batch=2))
    calls = []
    real = method.cell.forward
    method.cell.forward = lambda *a: calls.append(1) or real(*a)
    support, sy, _, _ = tasks(t=1)
    with torch.no_grad():
        method.adapt(support[0], sy[0])
    assert len(calls) == 3 * 3  # 3 passes over 5 images in batches of 2


def test_bad_hparams_are_rejected():
    for bad in (MetaLSTMHparams(inner_lr=0.0), MetaLSTMHparams(epochs=0), MetaLSTMHparams(bn_momentum=0.0)):
        with pytest.raises(ConfigError, match="hparams"):
            make(bad)


def test_training_state_round_trips(tmp_path: Path):
    assert_training_state_round_trips(make, tasks(), WAY, tmp_path)


def test_smoke_preset_learns_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert_smoke_learns_and_resumes("meta_lstm", tmp_path, monkeypatch)
