"""Device handling without a GPU: the training step loop keeps everything on the run's device and never syncs
with the host between evaluations; `--amp bf16` trains under autocast and keeps masks exact.

The step loop is run on PyTorch's "meta" device (shapes only, no data): reading a value there (`.item()`,
`float()`, `bool()`, what makes a CUDA run wait for the GPU) raises, and a dispatch mode records every
operation that touches a CPU tensor of more than one element, which on a CUDA run would be a host-device copy.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import engine
from engine import data as data_mod
from engine import masks as M
from engine import models, trainer
from engine.errors import ConfigError, RunCancelled

from conftest import tiny


class CpuTouches(TorchDispatchMode):
    """Records the operations whose inputs or outputs hold a CPU tensor of more than one element."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        if any(t.device.type == "cpu" and t.numel() > 1 for t in tensors):
            self.ops.append(str(func))
        return out


class StopBeforeTheLastStep:
    """A cancel flag set at the last step: the loop stops before the final evaluation reads the loss."""

    def __init__(self, steps: int):
        self.left = steps

    def is_set(self) -> bool:
        self.left -= 1
        return self.left <= 0


def _on_meta(cfg):
    data = data_mod.load(cfg.data)
    meta = data_mod.Dataset(data.name, *(data_mod.Split(s.x.to("meta"), s.y.to("meta"))
                                         for s in (data.train, data.val, data.test)), data.input_shape, data.num_classes)
    model = models.build(cfg.model, data.input_shape, data.num_classes, cfg.seed)
    # a ticket's mask as a method hands it over: bool, on the CPU here (the trainer moves it to the weights)
    mask = {n: torch.rand(m.shape, generator=torch.Generator().manual_seed(0)) > 0.5 for n, m in M.ones(model).items()}
    return meta, model.to("meta"), mask


@pytest.mark.parametrize("model,optimizer,schedule", [("lenet300", "adam", "constant"), ("conv2", "sgd", "cosine")])
def test_the_step_loop_stays_on_the_device_and_never_syncs(model, optimizer, schedule):
    cfg = tiny(**{"model.model": model, "train.optimizer": optimizer, "train.lr_schedule": schedule,
                  "train.epochs": 2, "train.eval_every": 10**6})  # one evaluation, after the last step
    meta, net, mask = _on_meta(cfg)
    steps = trainer.total_steps(len(meta.train), cfg.train)
    touches = CpuTouches()
    with touches, pytest.raises(RunCancelled):  # a host sync would raise RuntimeError on meta instead
        trainer.train(net, meta, cfg.train, mask, seed=0, cancel=StopBeforeTheLastStep(steps))
    # allowed: reading each mask once and moving it to the device before the first step, and copying each
    # epoch's data order (randperm by a CPU generator, the same on every device) to the device; nothing per step
    assert len(touches.ops) <= 2 * len(mask) + 2 * cfg.train.epochs, touches.ops
    assert all(p.device.type == "meta" for p in net.parameters())


@pytest.mark.parametrize("model", ["lenet300", "conv2"])  # the grouped-bmm path and the vmap path
def test_the_batched_step_loop_stays_on_the_device_and_never_syncs(model):
    from engine import batched

    cfg = tiny(**{"model.model": model, "train.epochs": 2, "train.eval_every": 10**6})
    meta, net, mask = _on_meta(cfg)
    members = [batched.Member(dict(net.state_dict()), mask if s else None, seed=s) for s in range(3)]
    steps = trainer.total_steps(len(meta.train), cfg.train)
    touches = CpuTouches()
    with touches, pytest.raises(RunCancelled):  # a host sync would raise RuntimeError on meta instead
        batched.train_batched(net, meta, cfg.train, members, cancel=StopBeforeTheLastStep(steps))
    # setup (masks read and moved) and each epoch's data orders: fewer than one per step
    assert len(touches.ops) < steps, touches.ops


def test_a_mask_on_another_device_is_moved_once():
    """The trainer multiplies gradients by masks on the weights' device (a CPU mask on a CUDA run would fail
    or copy every step)."""
    cfg = tiny(**{"train.epochs": 1})
    meta, net, mask = _on_meta(cfg)
    moved = []
    original = torch._foreach_mul_

    def foreach_mul_(grads, masks):
        moved.append({m.device.type for m in masks})
        return original(grads, masks)

    torch._foreach_mul_ = foreach_mul_
    try:
        with pytest.raises(RunCancelled):
            trainer.train(net, meta, cfg.train, mask, seed=0, cancel=StopBeforeTheLastStep(5))
    finally:
        torch._foreach_mul_ = original
    assert moved and all(d == {"meta"} for d in moved)


def test_amp_bf16_trains_under_autocast_with_exact_masks():
    cfg = tiny(**{"train.epochs": 2, "train.amp": "bf16"})
    data = data_mod.load(cfg.data)
    net = models.build(cfg.model, data.input_shape, data.num_classes, cfg.seed)
    mask = M.ones(net)
    first = M.prunable(net)[0]
    mask[first] = torch.rand(mask[first].shape, generator=torch.Generator().manual_seed(1)) > 0.7
    M.apply(net, mask)
    dtypes = set()
    layer = dict(net.named_modules())[first.rsplit(".", 1)[0]]
    layer.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
    result = trainer.train(net, data, cfg.train, mask, seed=0)
    assert torch.bfloat16 in dtypes  # training steps ran in bf16 (evaluation in float32)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    weight = dict(net.named_parameters())[first]
    assert torch.all(weight.detach()[~mask[first]] == 0)
    assert result.final["val_accuracy"] > 0.5  # it learns (digits, 2 epochs)
    plain = trainer.train(models.build(cfg.model, data.input_shape, data.num_classes, cfg.seed), data,
                          cfg.replace(**{"train.amp": "off"}).train, None, seed=0)
    assert abs(plain.final["val_accuracy"] - result.final["val_accuracy"]) < 0.15


def test_amp_is_an_option_with_one_line_errors(tmp_path, capsys):
    from engine.cli import main

    assert main(["run", "--amp", "fp8", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "train.amp" in err and "bf16" in err and len(err.strip().splitlines()) == 1
    assert tiny(**{"train.amp": "bf16"}).run_id != tiny().run_id  # bf16 changes results: another run
    with pytest.raises(ConfigError, match="train.amp"):
        trainer.autocast(tiny(**{"train.amp": "bf16"}).train, torch.device("meta"))


def test_gpu_suite_says_plainly_what_it_could_not_measure():
    """bench/gpu_suite.py (the CUDA check) on this machine: the CPU rows, and without CUDA a plain statement
    that the CUDA rows were not measured, exit 0."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_suite.py"
    out = subprocess.run([sys.executable, str(script), "--steps", "2", "--models", "lenet300"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert any(line.startswith("trainer lenet300") and " cpu " in line for line in out.stdout.splitlines()), out.stdout
    if not torch.cuda.is_available():
        assert "no CUDA device here" in out.stdout and "were not measured" in out.stdout
