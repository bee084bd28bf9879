"""Bayesian layers, their ELBO and uncertainty metrics, and Bayesian IMP (engine.bayes, engine.methods.bayes_imp)."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import engine
from engine import bayes, models, trainer
from engine import masks as M
from engine.config import DataConfig, ModelConfig, TrainConfig
from engine.data import load
from engine.errors import ConfigError
from engine.methods import bayes_imp
from engine.store import RunStore, load_tensors

from conftest import tiny


@pytest.fixture(scope="module")
def digits():
    return load(DataConfig())


def _bayes_lenet(digits, seed=0, **changes):
    cfg = ModelConfig(bayesian=True, **changes)
    return models.build(cfg, digits.input_shape, digits.num_classes, seed)


# ---------------------------------------------------------------- the layers
def test_kl_matches_the_closed_form_and_skips_pruned_weights():
    torch.manual_seed(0)
    layer = bayes.BayesLinear.from_layer(nn.Linear(7, 5), bayes.Options.of(prior_sigma=0.3))
    with torch.no_grad():
        layer.rho.normal_(-2.0, 0.5)
        layer.weight[0, :3] = 0.0  # pruned
    mu, sigma, prior = layer.weight.detach(), F.softplus(layer.rho.detach()), 0.3
    closed = torch.log(prior / sigma) + (sigma ** 2 + mu ** 2) / (2 * prior ** 2) - 0.5
    expected = closed[mu != 0].sum()
    assert torch.allclose(layer.kl(), expected, rtol=1e-5)
    model = nn.Sequential(layer)
    assert torch.allclose(bayes.kl(model), expected, rtol=1e-5)


@pytest.mark.parametrize("model_name,shape", [("lenet300", (1, 8, 8)), ("conv2", (1, 8, 8)), ("mlp", (1, 8, 8))])
def test_with_zero_noise_a_bayesian_net_is_the_deterministic_net_with_weights_mu(model_name, shape):
    det = models.build(ModelConfig(model=model_name), shape, 10, 3)
    bnet = models.build(ModelConfig(model=model_name, bayesian=True), shape, 10, 3)
    assert {n for n in bnet.state_dict() if not n.endswith("rho")} == set(det.state_dict())
    for n, v in det.state_dict().items():  # mu starts where the deterministic net starts
        assert torch.equal(bnet.state_dict()[n], v)
    assert M.prunable(bnet) == M.prunable(det)
    x = torch.randn(6, *shape)
    with bayes.noise(bnet, 0.0):
        assert torch.equal(bnet(x), det(x))
        assert torch.allclose(bayes.predict(bnet, x, 5), F.log_softmax(det(x), -1), atol=1e-6)
    assert not torch.equal(bnet(x), det(x))  # with noise it samples


def test_mc_convolution_gives_each_block_of_the_batch_its_own_weight_sample():
    torch.manual_seed(0)
    layer = bayes.BayesConv2d.from_layer(nn.Conv2d(3, 4, 3, padding=1), bayes.Options.of(sigma_init=0.3))
    s, n = 3, 2
    eps = torch.randn(s, *layer.weight.shape)
    layer._eps = lambda like: eps
    layer.samples = s
    x = torch.randn(s * n, 3, 5, 5)
    out = layer(x)
    for i in range(s):
        w = layer.weight + layer.sigma() * eps[i]
        assert torch.allclose(out[i * n:(i + 1) * n], F.conv2d(x[i * n:(i + 1) * n], w, layer.bias, padding=1),
                              atol=1e-5)


def test_the_local_reparameterisation_gradient_is_autograds():
    torch.manual_seed(0)
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    mu = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    var_w = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    eps = torch.randn(6, 3, dtype=torch.float64)
    tiny = torch.full((1,), 1e-16, dtype=torch.float64)
    assert torch.autograd.gradcheck(bayes._LocalReparameterisation.apply, (x, mu, bias, var_w, eps, tiny))
    want = F.linear(x, mu, bias) + (F.linear(x * x, var_w) + 1e-16).sqrt() * eps
    assert torch.allclose(bayes._LocalReparameterisation.apply(x, mu, bias, var_w, eps, tiny), want)


@pytest.mark.parametrize("model_name", ["conv2", "lenet300"])
def test_batched_mc_prediction_equals_one_pass_per_weight_sample(model_name):
    """predict's S samples in one batch and S passes of one sample each see the same noise: equal predictives
    (to float rounding), over several chunks; the automatic choice is one of the two."""
    torch.manual_seed(0)
    model = models.build(ModelConfig(model=model_name, bayesian=True, sigma_init=0.05), (1, 8, 8), 10, 0)
    x, s = torch.randn(7, 1, 8, 8), 4
    batched = bayes.predict(model, x, s, rows=12, batched=True)  # chunks of 3 inputs
    passes = bayes.predict(model, x, s, rows=12, batched=False)
    assert torch.allclose(batched, passes, rtol=1e-5, atol=1e-5)  # a grouped and a plain convolution round apart
    assert torch.equal(bayes.predict(model, x, s, rows=12), passes if model_name == "conv2" else batched)
    assert not torch.allclose(batched, bayes.predict(model, x, 1), atol=1e-3)  # the samples differ
    assert all(layer.sample is None and layer.samples == 1 for _, layer in bayes.layers(model))


def test_local_reparameterisation_has_the_exact_mean_and_variance():
    torch.manual_seed(0)
    layer = bayes.BayesLinear.from_layer(nn.Linear(4, 3), bayes.Options.of(sigma_init=0.5))
    x = torch.randn(1, 4)
    with torch.no_grad():
        out = layer(x.expand(20000, 4))
    mean = F.linear(x, layer.weight, layer.bias)[0]
    var = (x ** 2 @ (layer.sigma() ** 2).T)[0]
    assert torch.allclose(out.mean(0), mean, atol=0.05)
    assert torch.allclose(out.var(0), var, rtol=0.05)


def test_sigma_is_zero_where_the_mean_is_pruned_and_rho_sigma_map_matches():
    layer = bayes.BayesLinear.from_layer(nn.Linear(4, 3), bayes.Options.of(sigma_init=0.2))
    with torch.no_grad():
        layer.weight[1] = 0
    assert (layer.sigma()[1] == 0).all() and (layer.sigma()[0] > 0).all()
    sig = bayes.sigmas(nn.Sequential(layer).state_dict())
    assert torch.allclose(sig["0.weight"], layer.sigma())


# ---------------------------------------------------------------- training: masks, optimizer groups, determinism
def test_pruned_mu_and_rho_stay_zero_and_unused_through_training(digits):
    model = _bayes_lenet(digits, sigma_init=0.05)
    mask = M.prune_step(M.magnitude_scores(model, M.ones(model)), M.ones(model), 0.7, 0.3, "layerwise", "out.weight")
    M.apply(model, mask)
    params = dict(model.named_parameters())
    rho0 = {n: params[n[:-len("weight")] + "rho"].detach().clone() for n in mask}
    opt_box = []
    checked = []

    def on_step(step, m):
        for n, keep in mask.items():
            rho = params[n[:-len("weight")] + "rho"]
            assert (params[n][~keep] == 0).all(), f"pruned mean of {n} moved at step {step}"
            assert (params[n].grad[~keep] == 0).all()
            assert torch.equal(rho[~keep], rho0[n][~keep]), f"pruned rho of {n} was updated at step {step}"
            state = opt_box[0].state[params[n]]
            assert (state["exp_avg"][~keep] == 0).all() and (state["exp_avg_sq"][~keep] == 0).all()
            # the optimizer steps rho's kept entries, as one parameter in rho's place: a pruned rho has no
            # gradient and no optimizer state at all (engine.bayes._KeptRho)
            assert rho.grad is None and not opt_box[0].state.get(rho)
        checked.append(step)

    cfg = TrainConfig(epochs=1, batch_size=128, weight_decay=1e-3)
    trainer.train(model, digits, cfg, mask, seed=0, on_step=on_step, on_optimizer=opt_box.append)
    assert checked
    for n, keep in mask.items():  # the unpruned ones did train
        assert not torch.equal(params[n[:-len("weight")] + "rho"][keep], rho0[n][keep])
        assert (M.owner(model, n).sigma()[~keep] == 0).all()
    groups = opt_box[0].param_groups
    rho_group = [g for g in groups if any(p is params["hidden.0.rho"] for p in g["params"])][0]
    assert rho_group["lr"] == pytest.approx(1e-2) and rho_group["weight_decay"] == 0.0
    assert all(not any(p is params["hidden.0.rho"] for p in g["params"]) for g in groups if g is not rho_group)


def test_rho_learning_rate_follows_the_schedule_in_proportion(digits):
    model = _bayes_lenet(digits, rho_lr=4e-3)
    seen = []
    opt_box = []
    cfg = TrainConfig(epochs=1, batch_size=256, lr=2e-3, lr_schedule="cosine")
    trainer.train(model, digits, cfg, None, seed=0, on_optimizer=opt_box.append,
                  on_step=lambda s, m: seen.append([g["lr"] for g in opt_box[0].param_groups]))
    for lrs in seen:
        assert lrs[1] == pytest.approx(lrs[0] * 2, rel=1e-9)


def test_training_a_bayesian_net_repeats_exactly(digits):
    cfg = TrainConfig(epochs=1, batch_size=128)
    a, b = _bayes_lenet(digits), _bayes_lenet(digits)
    ra = trainer.train(a, digits, cfg, None, seed=5)
    rb = trainer.train(b, digits, cfg, None, seed=5)
    assert ra.final == rb.final
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_kl_warmup_rises_linearly_then_stays(digits):
    model = _bayes_lenet(digits, kl_warmup=4)
    penalty = bayes.start_training(model, 100, seed=0)
    full = float(bayes.kl(model).detach()) / 100
    got = [float(penalty().detach()) / full for _ in range(6)]
    assert got == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0], rel=1e-5)
    assert bayes.start_training(models.build(ModelConfig(), digits.input_shape, 10, 0), 100, 0) is None


# ---------------------------------------------------------------- metrics
def test_ece_of_a_perfectly_calibrated_predictor_is_about_zero():
    g = torch.Generator().manual_seed(0)
    probs, labels = [], []
    for conf in torch.linspace(0.2, 0.95, 15):  # one confidence per bin, exactly that fraction correct
        n = 400
        k = round(float(conf) * n)
        p = torch.full((n, 5), (1 - float(conf)) / 4)
        p[:, 0] = conf
        y = torch.ones(n, dtype=torch.long)
        y[torch.randperm(n, generator=g)[:k]] = 0
        probs.append(p)
        labels.append(y)
    probs, labels = torch.cat(probs), torch.cat(labels)
    rel = bayes.reliability(probs, labels)
    assert rel["ece"] < 2e-3
    assert sum(rel["count"]) == len(labels) and rel["bins"] == 15
    # and an overconfident one: always 100% sure, right half the time -> ECE 0.5
    sure = torch.zeros(100, 2)
    sure[:, 0] = 1.0
    assert bayes.ece(sure, torch.arange(100) % 2) == pytest.approx(0.5)


def test_evaluate_reports_the_mc_predictive(digits):
    model = _bayes_lenet(digits, mc_samples=4)
    m = bayes.evaluate(model, digits.test)
    logp = bayes.predict(model, digits.test.x)
    assert m["mc_samples"] == 4
    assert m["nll"] == pytest.approx(float(F.nll_loss(logp, digits.test.y)), rel=1e-6)
    assert trainer.evaluate(model, digits.test) == pytest.approx((m["nll"], m["accuracy"]))
    assert bayes.evaluate(model, digits.test) == m  # fixed prediction noise: same weights, same metrics


# ---------------------------------------------------------------- criteria
def _trained_like_weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = {"a.weight": (30, 20), "b.weight": (10, 30), "out.weight": (4, 10)}
    w = {}
    for n, s in shapes.items():
        w[n] = torch.randn(s, generator=g)
        w[n[:-len("weight")] + "rho"] = torch.randn(s, generator=g) - 3
    return w


@pytest.mark.parametrize("scope", ["layerwise", "global"])
@pytest.mark.parametrize("criterion", bayes_imp.CRITERIA)
def test_every_criterion_keeps_exactly_imps_counts(criterion, scope):
    w = _trained_like_weights()
    mask = {n: torch.ones_like(v, dtype=torch.bool) for n, v in w.items() if n.endswith("weight")}
    mask["a.weight"][:5] = False
    for n in mask:
        w[n][~mask[n]] = 0
    cfg = tiny(**{"prune.scope": scope, "prune.prune_fraction": 0.3, "prune.output_fraction": 0.1}).prune
    got = bayes_imp.prune_step(criterion, w, mask, cfg, "out.weight", torch.Generator().manual_seed(0))
    want = M.prune_step(M.magnitude_scores(w, mask), mask, 0.3, 0.1, scope, "out.weight")
    if scope == "layerwise":
        assert {n: int(m.sum()) for n, m in got.items()} == {n: int(m.sum()) for n, m in want.items()}
    else:
        assert M.kept(got) == M.kept(want) and int(got["out.weight"].sum()) == int(want["out.weight"].sum())
    for n in mask:
        assert not (got[n] & ~mask[n]).any(), "a pruned weight came back"


def test_mu_then_sigma_prunes_the_most_uncertain_of_the_2k_smallest_means():
    w = _trained_like_weights(1)
    mask = {n: torch.ones_like(v, dtype=torch.bool) for n, v in w.items() if n.endswith("weight")}
    cfg = tiny(**{"prune.prune_fraction": 0.2, "prune.output_fraction": 0.0}).prune
    got = bayes_imp.prune_step("mu-then-sigma", w, mask, cfg, "out.weight")
    sigma = bayes.sigmas(w)
    for n in ("a.weight", "b.weight"):
        mu, s = w[n].abs().flatten(), sigma[n].flatten()
        k = math.ceil(0.2 * mu.numel())
        candidates = torch.argsort(mu, stable=True)[:2 * k]
        pruned = set(torch.nonzero(~got[n].flatten()).flatten().tolist())
        assert len(pruned) == k and pruned <= set(candidates.tolist())
        expect = set(candidates[torch.argsort(-s[candidates], stable=True)[:k]].tolist())
        assert pruned == expect
    assert got["out.weight"].all()


def test_sigma_and_snr_rank_as_documented():
    w = _trained_like_weights(2)
    mask = {n: torch.ones_like(v, dtype=torch.bool) for n, v in w.items() if n.endswith("weight")}
    cfg = tiny(**{"prune.prune_fraction": 0.25}).prune
    sigma = bayes.sigmas(w)
    by_sigma = bayes_imp.prune_step("sigma", w, mask, cfg, "out.weight")
    assert sigma["a.weight"][~by_sigma["a.weight"]].min() >= sigma["a.weight"][by_sigma["a.weight"]].max()
    by_snr = bayes_imp.prune_step("snr", w, mask, cfg, "out.weight")
    snr = w["a.weight"].abs() / sigma["a.weight"]
    assert snr[~by_snr["a.weight"]].max() <= snr[by_snr["a.weight"]].min()


# ---------------------------------------------------------------- configuration and runs
def test_bayesian_settings_need_bayesian_and_bayes_imp_needs_a_bayesian_net(runs_dir):
    with pytest.raises(ConfigError, match="model.rho_lr"):
        tiny(**{"model.rho_lr": 3e-3})
    with pytest.raises(ConfigError, match="model.bayesian"):
        engine.run(tiny(**{"prune.method": "bayes-imp"}), runs_dir=runs_dir)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
    with pytest.raises(ConfigError, match="bayes_criterion"):
        tiny(**{"model.bayesian": True, "prune.method": "bayes-imp", "prune.bayes_criterion": "biggest"})


def _bayes_cfg(**changes):
    base = {"model.bayesian": True, "model.mc_samples": 3, "prune.method": "bayes-imp", "prune.levels": 2,
            "train.epochs": 1, "train.batch_size": 128, "prune.controls": ("reinit",)}
    return tiny(**{**base, **changes})


@pytest.fixture(scope="module")
def bayes_run(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("bayes") / "runs"
    cfg = _bayes_cfg(**{"prune.bayes_criterion": "mu-then-sigma"})
    return runs_dir, cfg, engine.run(cfg, runs_dir=runs_dir)


def test_bayes_imp_rewinds_mu_and_rho_and_stores_uncertainty_per_level(bayes_run):
    runs_dir, cfg, summary = bayes_run
    assert summary["status"] == "completed" and len(summary["levels"]) == 2
    store = RunStore(runs_dir, cfg.run_id)
    init = load_tensors(store.weights_path("init"))
    dense = store.load_level("ticket", 0)[1]
    mask, w = store.load_level("ticket", 1)
    for n, keep in mask.items():
        rho = n[:-len("weight")] + "rho"
        assert (w[n][~keep] == 0).all()
        # a pruned rho never moves after the rewind: it is still theta_0's, not the dense net's trained one
        assert torch.equal(w[rho][~keep], init[rho][~keep]) and not torch.equal(dense[rho], init[rho])
    u = store.analyses()["uncertainty"]
    assert [e["level"] for e in u["levels"]] == [0, 1, 2] and u["mc_samples"] == 3
    for e in u["levels"][1:]:
        assert set(e["variants"]) == {"ticket", "reinit"}
        assert e["deterministic"]["density"] == pytest.approx(e["density"])
        assert 0 <= e["variants"]["ticket"]["ece"] <= 1 and e["variants"]["ticket"]["nll"] > 0
    det = RunStore(runs_dir, u["deterministic_run"]).summary()
    assert det["status"] == "completed" and det["method"] == "imp" and det["controls"] == {}
    assert u["levels"][1]["variants"]["ticket"]["accuracy"] == pytest.approx(summary["levels"][0]["test_accuracy"])
    text = engine.cli.format_analysis("uncertainty", u) if hasattr(engine.cli, "format_analysis") else \
        bayes_imp.format_uncertainty("uncertainty", u)
    assert "deterministic ticket" in text and "0.5" not in text.splitlines()[0]


def test_transplant_takes_the_deterministic_tickets_masks(runs_dir):
    cfg = _bayes_cfg(**{"prune.bayes_transplant": True, "prune.controls": ()})
    engine.run(cfg, runs_dir=runs_dir)
    det = RunStore(runs_dir, bayes_imp.deterministic_config(cfg).run_id)
    store = RunStore(runs_dir, cfg.run_id)
    for level in (1, 2):
        a, b = store.load_mask("ticket", level), det.load_mask("ticket", level)
        assert all(torch.equal(a[n], b[n]) for n in a)


def test_uncertainty_analysis_measures_any_stored_run(runs_dir):
    from engine.analysis import analyze

    cfg = tiny(**{"prune.levels": 1, "train.epochs": 1})
    engine.run(cfg, runs_dir=runs_dir)
    u = analyze("uncertainty", runs_dir, cfg.run_id)
    assert u["mc_samples"] == 1 and [e["level"] for e in u["levels"]] == [0, 1]
    assert u["levels"][1]["variants"]["ticket"]["nll"] == pytest.approx(
        RunStore(runs_dir, cfg.run_id).level_record("ticket", 1)["test_loss"], rel=1e-5)


def test_the_fused_posterior_matches_autograd_through_torch_distributions():
    """engine.bayes._Posterior writes out mu (unchanged), the sampling stds (sigma^2 for a Linear layer, sigma for
    a Conv2d), the KL and all gradients for several layers at once: the same values and gradients as autograd
    through softplus, a float mask and torch.distributions' KL of two Normals, with gradient flowing into it
    through every output (mu's from the forward pass, the stds', the KL's); pruned positions get exactly 0."""
    from torch.distributions import Normal, kl_divergence

    torch.manual_seed(0)
    shapes, squares = [(5, 10), (4, 3, 3, 3), (2, 5)], (True, False, True)
    mus = [torch.randn(s, dtype=torch.float64) for s in shapes]
    for mu in mus:
        mu.view(-1)[:3] = 0
    rhos = [torch.randn(s, dtype=torch.float64) - 2 for s in shapes]
    up_mu = [torch.randn(s, dtype=torch.float64) for s in shapes]  # what the forward pass sends back to mu
    upstream = [torch.randn(s, dtype=torch.float64) for s in shapes]  # ... and to the stds
    a_mu, a_rho = [m.clone().requires_grad_() for m in mus], [r.clone().requires_grad_() for r in rhos]
    for _ in range(2):  # the second pass reuses the first one's buffers
        for t in a_mu + a_rho:
            t.grad = None
        *outs, kl = bayes._Posterior.apply(0.4, bayes._Buffers(a_rho, squares), *a_mu, *a_rho)
        mu_outs, outs = outs[:3], outs[3:]
        (sum((o * u).sum() for o, u in zip(mu_outs + outs, up_mu + upstream)) + 3 * kl).backward()
    assert all(torch.equal(o, m) for o, m in zip(mu_outs, mus))
    b_mu, b_rho = [m.clone().requires_grad_() for m in mus], [r.clone().requires_grad_() for r in rhos]
    prior = Normal(torch.zeros((), dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64))
    want_kl = sum((kl_divergence(Normal(m, F.softplus(r)), prior) * (m != 0)).sum() for m, r in zip(b_mu, b_rho))
    want = [(F.softplus(r) * (m != 0)) ** (2 if square else 1) for m, r, square in zip(b_mu, b_rho, squares)]
    (sum((w * u).sum() for w, u in zip(b_mu + want, up_mu + upstream)) + 3 * want_kl).backward()
    assert torch.allclose(kl, want_kl) and all(torch.allclose(o, w) for o, w in zip(outs, want))
    for a, b in zip(a_mu + a_rho, b_mu + b_rho):
        assert torch.allclose(a.grad, b.grad)
    for m, r, o in zip(mus, a_rho, outs):
        assert (r.grad[m == 0] == 0).all() and (o[m == 0] == 0).all()


def test_posterior_buffers_are_reused_only_once_their_backward_ran():
    model = models.build(ModelConfig(bayesian=True), (1, 8, 8), 10, 0)
    group, = bayes.posteriors(model)
    x = torch.randn(4, 1, 8, 8)
    first = model(x).sum() + group.take_kl()
    buffers = group._buffers
    second = model(x).sum() + group.take_kl()  # before the first backward: its own buffers
    assert group._buffers is buffers and buffers.in_use()
    (first + second).backward()  # both graphs see their own saved values (autograd's version check passes)
    assert not buffers.in_use()
    model(x).sum().backward()
    assert group._buffers is buffers  # reused
    model.hidden[0].weight.grad = None
    # (autograd's version check, or its stricter one for views a custom Function returns)
    with pytest.raises(RuntimeError, match="modified by an inplace operation|has been modified inplace"):
        loss = model(x).sum() + group.take_kl()
        buffers.release()  # pretend the graph were done: the next pass overwrites what it saved
        model(x).sum().backward()
        loss.backward()


def test_the_penalty_uses_the_kl_of_the_steps_forward_pass_and_recomputes_a_stale_one(digits):
    model = _bayes_lenet(digits)
    group, = bayes.posteriors(model)
    assert group.layers == [layer for _, layer in bayes.layers(model)]
    penalty = bayes.start_training(model, 10, seed=0)
    model(digits.train.x[:8])
    kept = group._kl
    got = penalty()
    assert torch.allclose(got, bayes.kl(model) / 10) and group._kl is None  # taken: a next penalty recomputes
    assert got.grad_fn.next_functions[0][0] is kept.grad_fn  # the forward pass's KL, not a second one
    model(digits.train.x[:8])
    kept = group._kl
    with torch.no_grad():
        model.hidden[0].weight.mul_(0.5)  # mu moved after the forward pass: that KL is stale
    got = penalty()
    assert torch.allclose(got, bayes.kl(model) / 10) and not torch.allclose(got, kept / 10)
    model(digits.train.x[:8]).sum().backward()  # a deep copy carries no graph, and computes its own
    twin = copy.deepcopy(model)
    assert bayes.posteriors(twin)[0].layers[0] is twin.hidden[0] and bayes.posteriors(twin)[0]._kl is None
    assert torch.allclose(bayes.kl(twin), bayes.kl(model))


def test_the_bayesian_tab_shows_metrics_reliability_and_sigma_maps(bayes_run):
    from explorer.bayes import BayesPanel, metric_rows

    runs_dir, cfg, _ = bayes_run
    panel = BayesPanel(runs_dir)
    assert panel.run.options == [cfg.run_id] and panel.level.options == [0, 1, 2]
    rows = metric_rows(panel.results)
    assert set(rows["variant"]) == {"ticket", "reinit", "deterministic ticket"}
    panel.metric.value = "ece"
    assert "ECE" in panel.panes["metric"].object.opts.get().kwargs["title"]
    panel.level.value, panel.layer.value = 1, "hidden.1.weight"
    sigma = panel._sigma[(cfg.run_id, 1, "hidden.1.weight")][1]
    mask = RunStore(runs_dir, cfg.run_id).load_mask("ticket", 1)["hidden.1.weight"].numpy()
    assert ((sigma > 0) == mask).all()  # sigma exactly where the ticket keeps weights
    assert "level 1" in panel.panes["reliability"].object.opts.get().kwargs["title"]


def test_cancelling_during_the_deterministic_comparison_cancels_the_run(runs_dir):
    import threading

    cancel = threading.Event()

    def sink(event):  # the Bayesian dense net is done: cancel while the deterministic run trains
        if type(event).__name__ == "LevelDone" and event.level == 0:
            cancel.set()

    cfg = _bayes_cfg()
    summary = engine.run(cfg, runs_dir=runs_dir, on_event=sink, cancel=cancel)
    assert summary["status"] == "cancelled" and summary["levels"] == []
    det = RunStore(runs_dir, bayes_imp.deterministic_config(cfg).run_id).summary()
    assert det["status"] == "cancelled"


def test_the_bayesian_tabs_titles_name_the_metric_and_fit_their_plots():
    # the metric plot's titles read "Test nll vs density" and "Test ece, 15 bins vs density" (str.capitalize), and at
    # 1400 px, where the sigma map sits beside the mask (~450 px wide with its colour bar), its 63-character title
    # lost its end, the median sigma, and its x label its first letter
    import numpy as np

    from explorer.bayes import metric_plot, sigma_plot

    results = {"r": {"levels": [{"level": 0, "density": 1.0,
                                 "variants": {"ticket": {"accuracy": 0.9, "nll": 0.3, "ece": 0.1}}}]}}
    titles = {m: metric_plot(results, m).opts.get().kwargs["title"] for m in ("accuracy", "nll", "ece")}
    assert titles == {"accuracy": "Test accuracy vs density", "nll": "Test NLL vs density",
                      "ece": "Test ECE vs density"}
    sigma = 1e-3 * (1 + 1e-4 * np.random.default_rng(0).standard_normal((300, 784)))  # (nearly uniform)
    kw = sigma_plot(sigma, "hidden.0.weight", 12).opts.get().kwargs
    assert kw["title"].endswith("median 0.001") and len(kw["title"]) <= 50, kw["title"]
    assert len(kw["xlabel"]) <= 50, kw["xlabel"]
