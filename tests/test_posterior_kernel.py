"""The compiled posterior kernel (engine/posterior_kernel.c, engine.bayes's `_fused_forward`/`_fused_backward`):
the same losses, stds and gradients as the PyTorch ops it replaces, over all weights and on a ticket's kept
weights; pruned entries exactly 0; and a machine that cannot build it trains on PyTorch ops, saying why."""
import ctypes
import math
import os
import subprocess
import sys
import tempfile

import pytest
import torch
import torch.nn.functional as F

from engine import bayes, models, posterior_kernel, trainer
from engine import masks as M
from engine.config import ModelConfig, TrainConfig

FLOOR = bayes._SOFTPLUS_FLOOR[torch.float32]  # (what engine.bayes hands the kernel)
needs_kernel = pytest.mark.skipif(not posterior_kernel.available(torch.zeros(1)),
                                  reason="the posterior kernel cannot be built here (" + posterior_kernel.status() + ")")


def _off(monkeypatch):
    """PyTorch ops from now on in this test, as on a machine without a compiler."""
    monkeypatch.setattr(posterior_kernel, "_tried", True)
    monkeypatch.setattr(posterior_kernel, "_library", None)


def _forward(rho, mu, sigma, std, square):
    """The kernel's forward pass over one layer of all its weights: the KL's three sums."""
    layers = posterior_kernel.Layers([rho.numel()], (square,))
    return posterior_kernel.forward(layers, FLOOR, rho=[rho], sigma=sigma, mu=[mu], std=[std])


def _backward(rho, mu, sigma, g_std, d_rho, square):
    layers = posterior_kernel.Layers([rho.numel()], (square,))
    posterior_kernel.backward(layers, FLOOR, 0.5, 0.16, rho=[rho], sigma=sigma, mu=[mu], g_std=[g_std],
                              d_rho=[d_rho], g_mu=None, d_mu=None)


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
    for name, want in eager[1].items():  # (a gradient sums a batch's terms: its rounding scales with its largest)
        assert torch.allclose(fused[1][name], want, rtol=1e-4, atol=1e-6 * max(1.0, want.abs().max().item())), name
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


@pytest.mark.parametrize("cc, why", [("/nonexistent/cc", "no C compiler"), ("false", "could not build or load it")])
def test_without_a_working_compiler_training_runs_on_pytorch_ops_and_says_why(monkeypatch, tmp_path, cc, why):
    monkeypatch.setenv("CC", cc)
    monkeypatch.delenv("LOTTERY_FUSED_KERNEL", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(posterior_kernel, "_tried", False)
    monkeypatch.setattr(posterior_kernel, "_library", None)
    monkeypatch.setattr(posterior_kernel, "_why_not", None)
    monkeypatch.setattr(posterior_kernel, "_noise", posterior_kernel._noise)  # (restored after, as the others)
    assert not posterior_kernel.available(torch.zeros(1))
    assert not posterior_kernel.normals_available(torch.zeros(1))  # (torch.randn draws the noise)
    assert posterior_kernel.status().startswith("fused posterior kernel: off (" + why)
    losses, _, stds, _ = _steps("lenet300", 0.2, True, steps=2)
    assert all(loss == loss for loss in losses) and all((s >= 0).all() for s in stds.values())


@needs_kernel
def test_the_library_is_built_once_into_the_cache_rebuilt_if_damaged_and_built_aside_if_the_cache_is_blocked(
        monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    cc = posterior_kernel._compiler()
    posterior_kernel._open(cc)
    built, = (tmp_path / "cache" / "lottery-explorer").glob("posterior_kernel-*.so")
    stamp = built.stat().st_mtime_ns
    posterior_kernel._open(cc)
    assert built.stat().st_mtime_ns == stamp  # (loaded, not rebuilt)
    built.unlink()  # damaged (a new file: the loaded one stays mapped): built again, in a process of its own
    built.write_bytes(b"half a file")  # (this one has the damaged name loaded already)
    subprocess.run([sys.executable, "-c", "from engine import posterior_kernel as k; k._open(k._compiler())"],
                   check=True, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert built.stat().st_size > 1000
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert posterior_kernel._open(cc).lte_posterior_backward
    assert not list((tmp_path / "tmp").iterdir())  # (built in a temporary folder, removed once loaded)


@needs_kernel
def test_a_compiler_without_openmp_builds_it_without_and_it_gives_the_same_numbers_on_one_thread(
        monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(posterior_kernel, "OPENMP", ["-fno-such-option-here"])  # (refused like a missing -fopenmp)
    library = posterior_kernel._open(posterior_kernel._compiler())
    assert not hasattr(library, "GOMP_parallel") and hasattr(posterior_kernel._load(), "GOMP_parallel")
    n = 3 * posterior_kernel.GRAIN + 5
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    want = posterior_kernel.normal_(torch.empty(n), 11)  # (OpenMP's threads)
    monkeypatch.setattr(posterior_kernel, "_noise", library)
    library.lte_normal.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_uint64]
    assert torch.equal(posterior_kernel.normal_(torch.empty(n), 11), want)  # (its three pieces in turn)


def test_the_cache_key_names_the_cpu_not_the_host(monkeypatch):
    """-march=native: a library built on one CPU must not be loaded on another that shares the home folder."""
    cc = posterior_kernel._compiler() or "cc"
    monkeypatch.setattr(posterior_kernel.subprocess, "run", lambda *a, **k: type("Done", (), {"stdout": "cc 1"}))
    monkeypatch.setattr(posterior_kernel, "_cpu", lambda: "flags: avx2")
    key = posterior_kernel._key(cc)
    monkeypatch.setattr(posterior_kernel.platform, "node", lambda: "another-host")
    assert posterior_kernel._key(cc) == key
    monkeypatch.setattr(posterior_kernel, "_cpu", lambda: "flags: avx2 avx512f")
    assert posterior_kernel._key(cc) != key


@needs_kernel
@pytest.mark.parametrize("rho, sigma_is_nan", [(float("nan"), True), (-90.0, False), (-1e30, False)])
def test_a_nan_rho_stays_nan_and_a_rho_below_softplus_floor_gets_a_finite_gradient(rho, sigma_is_nan):
    """-ffast-math lets the compiler assume no NaN: the kernel tests NaN by its bits; and sigmoid's division by an
    overflowing 1 + exp(-rho) would give NaN (a reciprocal): rho is floored there as softplus floors it."""
    model, _ = _net("lenet300", 1.0)
    layer = bayes.layers(model)[0][1]
    with torch.no_grad():
        layer.rho[0, :3] = rho
    kl = bayes.kl(model)
    kl.backward()
    assert bool(torch.isnan(kl)) == sigma_is_nan
    grad = layer.rho.grad[0, :3]
    assert torch.isnan(grad).all() if sigma_is_nan else (torch.isfinite(grad).all() and (grad < 0).all())


def test_a_bayesian_net_in_channels_last_layout_trains_on_pytorch_ops():
    """The kernel reads flat contiguous memory: anything else goes to PyTorch ops (it raised an assertion)."""
    model, _ = _net("conv2", 1.0)
    model = model.to(memory_format=torch.channels_last)
    bayes.kl(model).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_second_derivative_through_the_posterior_is_refused():
    model, _ = _net("lenet300", 1.0)
    mu = bayes.layers(model)[0][1].weight
    grad, = torch.autograd.grad(bayes.kl(model), mu, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad|twice"):
        grad.sum().backward()


@needs_kernel
def test_a_weights_results_do_not_depend_on_where_it_lies():
    """Every weight takes the same instructions (no scalar prologue or epilogue, whose exp and log round
    otherwise): a weight gets the same bits at any index (a ticket's compact weights and the dense net's) and
    any address, so a run repeats bit for bit."""
    g = torch.Generator().manual_seed(0)
    n = 1003  # (not a multiple of the kernel's block or of a vector's width)
    rho, mu, g_std = torch.randn(n, generator=g) - 3, torch.randn(n, generator=g), torch.randn(n, generator=g)
    mu[::3] = 0

    def run(start):
        m = n - start
        sigma, std, d_rho = torch.empty(m), torch.empty(m), torch.empty(m)
        _forward(rho[start:], mu[start:], sigma, std, True)
        _backward(rho[start:], mu[start:], sigma, g_std[start:], d_rho, True)
        return sigma, std, d_rho

    everything = run(0)
    for start in (1, 3, 5):  # (another index, and another address modulo a vector's width)
        assert all(torch.equal(a[start:], b) for a, b in zip(everything, run(start))), start


@needs_kernel
def test_a_large_layer_split_over_threads_gives_what_one_thread_gives(monkeypatch):
    g = torch.Generator().manual_seed(0)
    n = 5 * posterior_kernel.GRAIN + 7
    rho, mu, g_std = torch.randn(n, generator=g) - 3, torch.randn(n, generator=g), torch.randn(n, generator=g)
    mu[::4] = 0

    def run(threads):
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
        sigma, std, d_rho = torch.empty(n), torch.empty(n), torch.empty(n)
        sums = _forward(rho, mu, sigma, std, False)
        _backward(rho, mu, sigma, g_std, d_rho, False)
        return sigma, std, d_rho, sums

    one = run(1)
    assert posterior_kernel._pieces(n) == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert posterior_kernel._pieces(n) == 4
    four = run(4)
    assert all(torch.equal(a, b) for a, b in zip(one[:3], four[:3]))
    assert four[3] == pytest.approx(one[3], rel=1e-6) and four[3][2] == int((mu != 0).sum())


@needs_kernel
@pytest.mark.parametrize("threads", [1, 3])
def test_on_kept_weights_the_kernel_reads_and_writes_them_in_place_as_over_all_weights(monkeypatch, threads):
    """Layers laid end to end, each with its kept weights' positions: mu and the incoming gradients read there,
    the std and mu's gradient written there and nowhere else, with the bits of a pass over all weights; cut into
    pieces across layers for several threads."""
    monkeypatch.setattr(posterior_kernel, "GRAIN", 700)  # (pieces of a few blocks, cut inside layers)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    g = torch.Generator().manual_seed(0)
    sizes, squares = [1500, 2301, 37], (True, False, True)
    mus = [torch.randn(n, generator=g) for n in sizes]
    kept = [torch.randperm(n, generator=g)[:n // 3].sort().values for n in sizes]
    for mu, index in zip(mus, kept):
        outside = torch.ones_like(mu, dtype=torch.bool)
        outside[index] = False
        mu[outside] = 0
        mu[index[::5]] = 0  # (a kept weight at exactly 0 counts as pruned, as over all weights)
    rhos = [torch.randn(n, generator=g) - 3 for n in sizes]
    g_stds, g_mus = [torch.randn(n, generator=g) for n in sizes], [torch.randn(n, generator=g) for n in sizes]
    # over all weights
    full = posterior_kernel.Layers(sizes, squares)
    sigma, stds = torch.empty(sum(sizes)), [torch.empty(n) for n in sizes]
    sums = posterior_kernel.forward(full, FLOOR, rho=rhos, sigma=sigma, mu=mus, std=stds)
    d_rhos, d_mus = [torch.empty(n) for n in sizes], [g.clone() for g in g_mus]
    posterior_kernel.backward(full, FLOOR, 0.5, 0.16, rho=rhos, sigma=sigma, mu=mus, g_std=g_stds, d_rho=d_rhos,
                              g_mu=d_mus, d_mu=d_mus)
    # on the kept weights: rho and sigma laid out kept weight after kept weight
    compact = posterior_kernel.Layers([len(i) for i in kept], squares, [i.int() for i in kept])
    rho_kept = torch.cat([rho[i] for rho, i in zip(rhos, kept)])
    sigma_kept, stds_kept = torch.empty(len(rho_kept)), [torch.full((n,), 7.0) for n in sizes]
    sums_kept = posterior_kernel.forward(compact, FLOOR, rho=rho_kept, sigma=sigma_kept, mu=mus, std=stds_kept)
    d_rho_kept, d_mus_kept = torch.empty(len(rho_kept)), [g.clone() for g in g_mus]
    posterior_kernel.backward(compact, FLOOR, 0.5, 0.16, rho=rho_kept, sigma=sigma_kept, mu=mus, g_std=g_stds,
                              d_rho=d_rho_kept, g_mu=d_mus_kept, d_mu=d_mus_kept)
    for i, index in enumerate(kept):
        outside = torch.ones(sizes[i], dtype=torch.bool)
        outside[index] = False
        assert torch.equal(stds_kept[i][index], stds[i][index]) and (stds_kept[i][outside] == 7).all()
        assert torch.equal(d_mus_kept[i][index], d_mus[i][index])
        assert torch.equal(d_mus_kept[i][outside], g_mus[i][outside])  # (mu is 0 there: its gradient as it came)
    assert torch.equal(sigma_kept, torch.cat([s[i] for s, i in zip(sigma.split(sizes), kept)]))
    assert torch.equal(d_rho_kept, torch.cat([d[i] for d, i in zip(d_rhos, kept)]))
    assert sums_kept[2] == sums[2] == sum(int((mu != 0).sum()) for mu in mus)
    assert sums_kept == pytest.approx(sums, rel=1e-5)


@needs_kernel
def test_the_kernels_softplus_is_within_a_few_float_roundings_of_the_exact_one():
    """-ffast-math may rewrite arithmetic (it would turn Goldberg's log1p into a plain log(1 + e), 800 roundings
    off): sigma is checked against float64's softplus over the range rho takes above its floor."""
    rho = torch.cat([torch.linspace(-80, 30, 100_001), torch.randn(50_000, generator=torch.Generator().manual_seed(0))
                     * 3 - 5])
    sigma, std = torch.empty_like(rho), torch.empty_like(rho)
    _forward(rho, torch.ones_like(rho), sigma, std, False)
    exact = F.softplus(rho.double())
    assert ((sigma.double() - exact).abs() / exact).max() < 4 * torch.finfo(torch.float32).eps


@needs_kernel
def test_the_kernels_softplus_is_within_a_few_roundings_of_softplus_in_double():
    """softplus by exp and the series of log1p (posterior_kernel.c): over the float32 range it serves (from the
    floor up) within 4e-7 relative of float64's, as PyTorch's own (1.2e-7) to a couple of roundings."""
    rho = torch.cat([torch.linspace(FLOOR + 0.01, 100.0, 200_001), torch.linspace(-12.0, 3.0, 50_001)])
    sigma, std = torch.empty_like(rho), torch.empty_like(rho)
    _forward(rho, torch.ones_like(rho), sigma, std, False)
    want = F.softplus(rho.double(), threshold=1000.0)
    assert ((sigma.double() - want).abs() / want).max() < 4e-7


def _philox(counter: int, key: int) -> list[int]:
    """Philox4x32-10 of (counter, 0) under key, in Python integers (Salmon et al. 2011)."""
    x, k0, k1, mask = [counter & 0xFFFFFFFF, counter >> 32, 0, 0], key & 0xFFFFFFFF, key >> 32, 0xFFFFFFFF
    for _ in range(10):
        p0, p1 = 0xD2511F53 * x[0], 0xCD9E8D57 * x[2]
        x = [(p1 >> 32) ^ x[1] ^ k0, p1 & mask, (p0 >> 32) ^ x[3] ^ k1, p0 & mask]
        k0, k1 = (k0 + 0x9E3779B9) & mask, (k1 + 0xBB67AE85) & mask
    return x


def test_the_python_philox_reference_gives_random123s_known_answers():
    assert _philox(0, 0) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


@needs_kernel
def test_the_noise_is_philox_and_box_muller_as_documented_and_standard_normal():
    key, n = 0x1234_5678_9ABC_DEF0, 1000
    got = posterior_kernel.normal_(torch.empty(n), key).double()
    want = []
    for j in range(n):  # normal j of a block of 256: word j // 64 of counter (block * 64 + j % 64)
        block, i = divmod(j, 256)
        word, lane = divmod(i, 64)
        x = _philox(block * 64 + lane, key)
        a, b = x[2 * (word // 2)], x[2 * (word // 2) + 1]
        r, angle = math.sqrt(-2 * math.log(((a >> 8) + 1) / 2 ** 24)), 2 * math.pi * (b >> 8) / 2 ** 24
        want.append(r * (math.cos(angle) if word % 2 == 0 else math.sin(angle)))
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=2e-6)
    many = posterior_kernel.normal_(torch.empty(1_000_000), 7).double()
    assert abs(many.mean()) < 5e-3 and abs(many.std() - 1) < 5e-3 and abs((many ** 4).mean() - 3) < 0.05
    assert not torch.equal(many[:n], posterior_kernel.normal_(torch.empty(n), 8))


@needs_kernel
def test_the_noise_of_a_large_call_split_over_threads_is_what_one_thread_gives(monkeypatch):
    n = 5 * posterior_kernel.GRAIN + 7
    one = posterior_kernel.normal_(torch.empty(n), 3)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert torch.equal(posterior_kernel.normal_(torch.empty(n), 3), one)
    out, e = torch.ones(n), torch.empty(n)
    w = torch.rand(n, generator=torch.Generator().manual_seed(0)) + 0.5
    posterior_kernel.local_noise_(w, out, e, 3)  # (on 3 threads too)
    assert torch.allclose(out, 1 + w.sqrt() * one / 2, atol=1e-6) and torch.allclose(e, one / w.sqrt(), atol=1e-6)


@needs_kernel
def test_the_noise_helpers_refuse_what_they_cannot_write():
    with pytest.raises(ValueError, match="float32"):
        posterior_kernel.normal_(torch.empty(10, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="one shape"):
        posterior_kernel.local_noise_(torch.ones(4), torch.ones(4), torch.empty(4, dtype=torch.bfloat16), 1)
