"""The compiled posterior kernel (engine/posterior_kernel.c, engine.bayes's `_fused_forward`/`_fused_backward`):
the same losses, stds and gradients as the PyTorch ops it replaces, over all weights and on a ticket's kept
weights; pruned entries exactly 0; and a machine that cannot build it trains on PyTorch ops, saying why."""
import torch
import torch.nn.functional as F
import pytest

from engine import bayes, models, posterior_kernel, trainer
from engine import masks as M
from engine.config import ModelConfig, TrainConfig

needs_kernel = pytest.mark.skipif(not posterior_kernel.available(torch.zeros(1)),
                                  reason="the posterior kernel cannot be built here (" + posterior_kernel.status() + ")")


def _off(monkeypatch):
    """PyTorch ops from now on in this test, as on a machine without a compiler."""
    monkeypatch.setattr(posterior_kernel, "_tried", True)
    monkeypatch.setattr(posterior_kernel, "_library", None)


def _net(model_name, density):
    model = models.build(ModelConfig(model=model_name, bayesian=True, sigma_init=0.05), (1, 8, 8), 10, 0)
    mask = M.ones(model)
    if density < 1:
        mask = M.prune_to_density(M.magnitude_scores(model, mask), mask, density, 0.5, "layerwise",
                                  M.output_layer(model))
        M.apply(model, mask)
    with torch.no_grad():  # rho differing from weight to weight, as after training
        for _, layer in bayes.layers(model):
            layer.rho.add_(torch.randn(layer.rho.shape, generator=torch.Generator().manual_seed(1)))
    params = dict(model.named_parameters())
    return model, [(params[n], m.to(params[n].dtype)) for n, m in mask.items() if density < 1]


def _steps(model_name, density, with_optimizer, steps=3):
    """Losses, the first step's gradients, and stds and parameters after a few training steps, as
    engine.trainer takes them."""
    model, grad_masks = _net(model_name, density)
    opt = trainer.make_optimizer(model.parameters(), TrainConfig())
    penalty = bayes.start_training(model, 100, 0, grad_masks, opt if with_optimizer else None)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
    losses, grads = [], None
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y) + penalty()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p, m in grad_masks:
            p.grad.mul_(m)
        grads = grads or {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        opt.step()
        losses.append(loss.item())
    bayes.end_training(model)
    stds = {name: layer.sigma() for name, layer in bayes.layers(model)}
    return losses, grads, stds, {n: p.detach().clone() for n, p in model.named_parameters()}


@needs_kernel
@pytest.mark.parametrize("model_name", ["lenet300", "conv2"])  # sigma^2 (local reparameterisation) and sigma out
@pytest.mark.parametrize("density, with_optimizer", [(1.0, False), (0.2, False), (0.2, True)])
def test_the_kernel_trains_as_the_pytorch_ops(monkeypatch, model_name, density, with_optimizer):
    fused = _steps(model_name, density, with_optimizer)
    _off(monkeypatch)
    eager = _steps(model_name, density, with_optimizer)
    assert fused[0] == pytest.approx(eager[0], rel=1e-5)
    assert fused[1].keys() == eager[1].keys()
    for name, want in eager[1].items():
        assert torch.allclose(fused[1][name], want, rtol=1e-4, atol=1e-6), name
    # (after Adam's steps: an entry whose gradient is near Adam's eps moves by up to its rate on a rounding)
    for got, want in zip(fused[2:], eager[2:]):
        for name in want:
            assert torch.allclose(got[name], want[name], rtol=1e-4, atol=1e-4), name
    if density < 1:
        for name, layer_std in fused[2].items():
            mu = fused[3][name + ".weight"]
            assert (mu[eager[3][name + ".weight"] == 0] == 0).all() and (layer_std[mu == 0] == 0).all()
            if not with_optimizer:  # (with it, rho's kept entries are the optimizer's parameter)
                assert (fused[1][name + ".rho"][mu == 0] == 0).all()


@needs_kernel
def test_the_kernels_kl_and_gradients_are_the_closed_forms():
    model, _ = _net("lenet300", 0.3)
    with torch.no_grad():
        ref = model.double()  # (float64: PyTorch ops; the reference)
        kl64 = bayes.kl(ref).item()
        model.float()
    kl = bayes.kl(model)
    assert kl.item() == pytest.approx(kl64, rel=1e-6)
    kl.backward()
    for _, layer in bayes.layers(model):
        mu, rho = layer.weight.detach().double(), layer.rho.detach().double().requires_grad_()
        alive = mu != 0
        sigma = F.softplus(rho)
        want = ((sigma ** 2 + mu ** 2) / (2 * layer.prior_sigma ** 2) - sigma.log())[alive].sum()
        want.backward()
        assert torch.allclose(layer.rho.grad.double(), rho.grad, rtol=1e-4, atol=1e-9)
        assert (layer.rho.grad[~alive] == 0).all()
        assert torch.allclose(layer.weight.grad.double(), mu / layer.prior_sigma ** 2, rtol=1e-5)


@pytest.mark.parametrize("cc, why", [("/nonexistent/cc", "no C compiler"), ("false", "could not build it")])
def test_without_a_working_compiler_training_runs_on_pytorch_ops_and_says_why(monkeypatch, tmp_path, cc, why):
    monkeypatch.setenv("CC", cc)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(posterior_kernel, "_tried", False)
    monkeypatch.setattr(posterior_kernel, "_library", None)
    monkeypatch.setattr(posterior_kernel, "_why_not", None)
    assert not posterior_kernel.available(torch.zeros(1))
    assert posterior_kernel.status().startswith("fused posterior kernel: off (" + why)
    losses, _, stds, _ = _steps("lenet300", 0.2, True, steps=2)
    assert all(loss == loss for loss in losses) and all((s >= 0).all() for s in stds.values())


@needs_kernel
def test_the_library_is_built_once_into_the_cache_and_a_read_only_cache_falls_back_to_a_temporary_one(
        monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cc = posterior_kernel._compiler()
    first = posterior_kernel._build(cc)
    assert first.parent == tmp_path / "lottery-explorer"
    stamp = first.stat().st_mtime_ns
    assert posterior_kernel._build(cc) == first and first.stat().st_mtime_ns == stamp  # (not rebuilt)
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    other = posterior_kernel._build(cc)
    assert other.exists() and not str(other).startswith(str(blocked))
