"""Optimiser groups, schedule, warmup and EMA."""
import math

import pytest
import torch
from torch import nn

from yolov3.config import ConfigError, TrainConfig
from yolov3.optim import ModelEMA, build_optimizer, lr_factor, parameter_groups, set_learning_rates


def tiny():
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def test_no_weight_decay_on_norm_and_bias():
    model = tiny()
    decay, norm, bias = parameter_groups(model)
    assert [p.shape for p in decay] == [torch.Size([4, 3, 3, 3]), torch.Size([2, 4, 1, 1])]
    assert [p.shape for p in norm] == [torch.Size([4])]
    assert [p.shape for p in bias] == [torch.Size([4]), torch.Size([2])]  # BN beta and conv bias
    opt = build_optimizer(model, TrainConfig(weight_decay=0.1))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0, 0.0]
    assert opt.param_groups[0]["nesterov"] is True
    with pytest.raises(ConfigError, match="train.optimizer.*sgd, adamw"):
        build_optimizer(model, TrainConfig(optimizer="rmsprop"))


def test_adamw_takes_momentum_as_beta1_and_the_same_groups():
    opt = build_optimizer(tiny(), TrainConfig(optimizer="adamw", momentum=0.9, lr0=0.002, weight_decay=0.05))
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["betas"] for g in opt.param_groups] == [(0.9, 0.999)] * 3  # beta1 = momentum, as yolov5 does
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0, 0.0]
    assert [g["lr"] for g in opt.param_groups] == [0.002] * 3


def test_cosine_and_step_factors():
    cfg = TrainConfig(epochs=10, lrf=0.01)
    assert lr_factor(0, cfg) == pytest.approx(1.0)
    assert lr_factor(5, cfg) == pytest.approx(0.01 + 0.99 * 0.5)  # half way: cos(pi/2)=0
    assert lr_factor(10, cfg) == pytest.approx(0.01)
    assert lr_factor(2.5, cfg) == pytest.approx(0.01 + 0.99 * (1 + 0.5**0.5) / 2)  # a quarter: cos(pi/4) = 1/sqrt 2
    assert lr_factor(12, cfg) == pytest.approx(0.01) and lr_factor(-1, cfg) == pytest.approx(1.0)  # clamped
    step = TrainConfig(epochs=10, schedule="step", step_milestones=[0.5, 0.8], step_gamma=0.1)
    assert [lr_factor(e, step) for e in (0, 4.9, 5, 7.9, 8, 9.9)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    with pytest.raises(ConfigError, match="train.schedule"):
        lr_factor(0, TrainConfig(schedule="poly"))


def test_warmup_ramps_weights_up_and_bias_down():
    cfg = TrainConfig(epochs=10, lr0=0.01, warmup_bias_lr=0.1, warmup_momentum=0.8, momentum=0.9)
    opt = build_optimizer(tiny(), cfg)
    set_learning_rates(opt, cfg, iteration=0, iters_per_epoch=10, warmup_iters=20)
    assert opt.param_groups[0]["lr"] == 0.0 and opt.param_groups[2]["lr"] == pytest.approx(0.1)
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.8)
    set_learning_rates(opt, cfg, iteration=10, iters_per_epoch=10, warmup_iters=20)
    # epoch 1 of 10 on the cosine (lrf .01 by default): .01 + .99 * (1 + cos(pi / 10)) / 2 = .01 + .99 * .975528
    scheduled = 0.01 * (0.01 + 0.99 * 0.9755283)
    assert opt.param_groups[0]["lr"] == pytest.approx(scheduled / 2, rel=1e-6)  # half way through the ramp from 0
    assert opt.param_groups[2]["lr"] == pytest.approx((0.1 + scheduled) / 2, rel=1e-6)  # and down from .1
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.85)
    lr = set_learning_rates(opt, cfg, iteration=30, iters_per_epoch=10, warmup_iters=20)
    # epoch 3: .01 + .99 * (1 + cos(3 pi / 10)) / 2 = .01 + .99 * .793893
    assert lr == pytest.approx(0.01 * (0.01 + 0.99 * 0.7938926), rel=1e-6)
    assert all(g["lr"] == lr for g in opt.param_groups) and opt.param_groups[0]["momentum"] == 0.9
    # between epochs the schedule is continuous: iteration 25 is epoch 2.5, cos(pi / 4) = 1 / sqrt 2
    lr = set_learning_rates(opt, cfg, iteration=25, iters_per_epoch=10, warmup_iters=20)
    assert lr == pytest.approx(0.01 * (0.01 + 0.99 * (1 + 0.5**0.5) / 2), rel=1e-9)


def test_ema_follows_the_ramped_decay():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEMA(model, decay=0.9, tau=1.0)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1))  # decay after one update
    assert ema.ema.weight.item() == pytest.approx(1 - d)
    state = ema.state_dict()
    other = ModelEMA(nn.Linear(1, 1, bias=False))
    other.load_state_dict(state)
    assert other.updates == 1 and other.ema.weight.item() == pytest.approx(1 - d)


def test_ema_of_a_batchnorm_model_averages_floats_copies_counters_and_follows_a_new_model():
    """The fused lerp must equal decay * ema + (1 - decay) * model on every float tensor, buffers included."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = ModelEMA(model, decay=0.5, tau=1e-9)  # the ramp is over at once: decay 0.5 exactly
    before = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    with torch.no_grad():
        for value in model.state_dict().values():
            value.add_(torch.randn(value.shape).abs() + 1 if value.is_floating_point() else 3)
    ema.update(model)
    source = model.state_dict()
    for key, value in ema.ema.state_dict().items():
        expected = 0.5 * before[key] + 0.5 * source[key] if value.is_floating_point() else source[key]
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7, msg=key)
    assert ema.ema.state_dict()["1.num_batches_tracked"].item() == 3
    replacement = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))  # another model object: pairs rebuilt
    with torch.no_grad():
        for value in replacement.parameters():
            value.fill_(2.0)
    previous = ema.ema[0].weight.clone()
    ema.update(replacement)
    torch.testing.assert_close(ema.ema[0].weight, 0.5 * previous + 1.0)


def test_fused_sgd_steps_exactly_as_the_reference_loop():
    from yolov3.config import TrainConfig
    from yolov3.optim import build_optimizer

    torch.manual_seed(0)
    models = [nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    config = TrainConfig(lr0=0.01, momentum=0.9, nesterov=True, weight_decay=0.01)
    fused = build_optimizer(models[0], config)
    reference = build_optimizer(models[1], config)
    for group in reference.param_groups:  # the same groups, on the per-tensor loop
        group["fused"], group["foreach"] = None, False
    assert fused.param_groups[0]["fused"] in (True, None)  # True where this torch has the CPU kernel
    for _ in range(3):
        inputs = torch.randn(2, 3, 8, 8)
        for model, optimizer in zip(models, (fused, reference)):
            optimizer.zero_grad()
            model(inputs).square().mean().backward()
            optimizer.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)  # a last-bit rounding difference at most
    assert not torch.equal(models[0][0].weight, nn.Conv2d(3, 4, 3).weight)  # it did move


def test_accumulation_divisor_groups_and_the_short_last_group():
    from yolov3.optim import accumulation_divisor, accumulation_steps
    assert accumulation_steps(64, 16) == 4 and accumulation_steps(16, 32) == 1 and accumulation_steps(64, 24) == 3
    # 10 batches, steps after batches 4, 8 and 10: groups of 4, 4, 2
    assert [accumulation_divisor(i, 4, 10) for i in range(10)] == [4] * 8 + [2] * 2
    assert [accumulation_divisor(i, 1, 3) for i in range(3)] == [1, 1, 1]
    with pytest.raises(ValueError):
        accumulation_divisor(10, 4, 10)


def test_accumulated_gradient_is_the_mean_of_the_steps_batches_not_their_sum():
    # loss of batch i is w * x_i, so its gradient is x_i; batches x = 1, 2, 3, 6 with accumulate 2 over 3 batches
    # of an epoch of 3: step 1 averages (1 + 2) / 2 = 1.5, step 2 (the short group) takes 3 alone
    from yolov3.optim import accumulation_divisor
    w = torch.zeros((), requires_grad=True)
    grads = []
    for i, x in enumerate([1.0, 2.0, 3.0]):
        (w * x / accumulation_divisor(i, 2, 3)).backward()
        if (i + 1) % 2 == 0 or i + 1 == 3:
            grads.append(w.grad.item())
            w.grad = None
    assert grads == [1.5, 3.0]


def test_freeze_layers_by_count_or_index_and_the_optimiser_skips_them():
    from pathlib import Path

    from yolov3.model import Darknet
    from yolov3.optim import freeze_layers

    model = Darknet(str(Path(__file__).resolve().parents[1] / "cfg" / "yolov3-tiny.cfg"), num_classes=2)
    layers = model.module_list
    assert freeze_layers(model, 3) == [0, 1, 2]  # yolov5's --freeze N: the first N layers
    frozen = {id(p) for i in (0, 1, 2) for p in layers[i].parameters()}
    assert all(not p.requires_grad for i in (0, 1, 2) for p in layers[i].parameters())
    assert all(p.requires_grad for i in range(3, len(layers)) for p in layers[i].parameters())
    held = {id(p) for group in build_optimizer(model, TrainConfig()).param_groups for p in group["params"]}
    assert held == {id(p) for p in model.parameters()} - frozen
    assert freeze_layers(model, [4, 2, 4]) == [2, 4]  # a list: those indices, each once
    with pytest.raises(ConfigError, match=rf"'train.freeze': layer\(s\) \[99\] of a model whose layers are "
                                          rf"0..{len(layers) - 1}"):
        freeze_layers(model, [1, 99])
    with pytest.raises(ConfigError, match=r"'train.freeze': the first 100 of a model whose layers are"):
        freeze_layers(model, 100)


def test_warmup_ramps_batchnorm_weights_from_zero_nesterov_off_and_freezing_beyond_the_model():
    from yolov3.config import ConfigError as CE
    from yolov3.model import Darknet
    from yolov3.optim import freeze_layers

    cfg = TrainConfig(epochs=10, lr0=0.01, warmup_bias_lr=0.1)
    opt = build_optimizer(tiny(), cfg)
    set_learning_rates(opt, cfg, 0, 0, 20)
    assert opt.param_groups[1]["lr"] == 0.0 and opt.param_groups[2]["lr"] == pytest.approx(0.1)
    assert build_optimizer(tiny(), TrainConfig(nesterov=False)).param_groups[0]["nesterov"] is False
    model = Darknet("cfg/yolov3-tiny.cfg", num_classes=2)
    assert len(model.module_list) == 24
    with pytest.raises(CE, match=r"layer\(s\) \[24\] of a model whose layers are 0..23"):
        freeze_layers(model, [24])
    with pytest.raises(CE, match="the first 25"):
        freeze_layers(model, 25)
