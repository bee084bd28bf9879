"""A sparse ticket's posterior computed on its kept weights only (engine.bayes: Posterior.restrict, _Support):
the same stds, KL and gradients as over all weights, only while the training that set the masks lives, and
rebuilt when a mask changes in place (dynamic sparse training); and the training's optimizer stepping rho's kept
entries only (_KeptRho), as it would step rho whole."""
import copy

import pytest
import torch
import torch.nn.functional as F

from engine import bayes, models, trainer
from engine import masks as M
from engine.config import DataConfig, ModelConfig, TrainConfig
from engine.data import load


def _ticket_net(model_name="lenet300", density=0.2, seed=0):
    model = models.build(ModelConfig(model=model_name, bayesian=True, sigma_init=0.05), (1, 8, 8), 10, seed)
    mask = M.prune_to_density(M.magnitude_scores(model, M.ones(model)), M.ones(model), density, 0.5,
                              "layerwise", M.output_layer(model))
    M.apply(model, mask)
    with torch.no_grad():  # rho differs from weight to weight, as after some training
        for _, layer in bayes.layers(model):
            layer.rho.add_(torch.randn(layer.rho.shape, generator=torch.Generator().manual_seed(1)) * 0.5)
    params = dict(model.named_parameters())
    grad_masks = [(params[n], m.to(params[n].dtype)) for n, m in mask.items()]  # as engine.trainer makes them
    return model, mask, grad_masks


def _step(model, penalty, x, y, seed=3):
    """One training step's loss and gradients (the noise seeded alike for every call)."""
    bayes.seed_noise(model, seed)
    for p in model.parameters():
        p.grad = None
    loss = F.cross_entropy(model(x), y) + penalty()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _compare(model, grad_masks, x, y):
    """(loss, grads) of a step on the kept weights only, and over all weights (no masks handed over)."""
    group, = bayes.posteriors(model)
    compact = bayes.start_training(model, 100, 0, grad_masks)
    assert group.support() is not None  # (the compact path is taken)
    got = _step(model, compact, x, y)
    full = bayes.start_training(model, 100, 0)
    assert group.support() is None
    want = _step(model, full, x, y)
    return got, want


def _assert_same(got, want):
    (loss_a, grads_a), (loss_b, grads_b) = got, want
    assert torch.allclose(loss_a, loss_b, rtol=1e-6)
    for n in grads_b:
        assert torch.allclose(grads_a[n], grads_b[n], rtol=1e-5, atol=1e-7), n


@pytest.mark.parametrize("model_name", ["lenet300", "conv2"])
def test_the_compact_posterior_gives_the_full_ones_loss_and_gradients(model_name):
    """conv2 mixes sampled-weight (sigma) and local-reparameterisation (sigma^2) layers: two segments."""
    model, mask, grad_masks = _ticket_net(model_name)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    got, want = _compare(model, grad_masks, x, y)
    _assert_same(got, want)
    group, = bayes.posteriors(model)
    for (name, layer), keep in zip(bayes.layers(model), mask.values()):  # pruned: no variance, rho no gradient
        assert (got[1][name + ".rho"][~keep] == 0).all()
    assert all(layer.sigma().count_nonzero() == k.sum() for (_, layer), k in zip(bayes.layers(model), mask.values()))


def test_the_kl_on_the_kept_weights_is_the_closed_form():
    model, mask, grad_masks = _ticket_net()
    penalty = bayes.start_training(model, 1, 0, grad_masks)
    group, = bayes.posteriors(model)
    assert group.support() is not None
    want = 0.0
    for (_, layer), keep in zip(bayes.layers(model), mask.values()):
        mu, sigma, prior = layer.weight.detach()[keep], F.softplus(layer.rho.detach()[keep]), layer.prior_sigma
        want += (torch.log(prior / sigma) + (sigma ** 2 + mu ** 2) / (2 * prior ** 2) - 0.5).sum()
    assert torch.allclose(group.kl(), want, rtol=1e-5)
    del penalty


def test_a_kept_weight_at_exactly_zero_and_a_nonzero_one_outside_the_mask_count_as_over_all_weights():
    """The support is the mask's kept weights plus any nonzero mu: a kept mu at exactly 0 (a weight dynamic
    sparse training just grew) is pruned, a nonzero mu the mask does not keep is not, just as over all weights."""
    model, mask, grad_masks = _ticket_net()
    first = model.hidden[0]
    keep = mask["hidden.0.weight"]
    kept, dropped = keep.nonzero()[:3], (~keep).nonzero()[:2]
    with torch.no_grad():
        first.weight[kept[:, 0], kept[:, 1]] = 0.0
        first.weight[dropped[:, 0], dropped[:, 1]] = 0.3
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    got, want = _compare(model, grad_masks, x, y)
    _assert_same(got, want)
    rho_grad = got[1]["hidden.0.rho"]
    assert (rho_grad[kept[:, 0], kept[:, 1]] == 0).all() and (rho_grad[dropped[:, 0], dropped[:, 1]] != 0).all()


def test_a_mask_changed_in_place_rebuilds_the_support():
    """Dynamic sparse training drops and grows weights by writing into the float mask the trainer holds: its
    version counter changes and the support follows (dropped: mu set to 0, no variance; grown: in the support)."""
    model, mask, grad_masks = _ticket_net()
    group, = bayes.posteriors(model)
    penalty = bayes.start_training(model, 100, 0, grad_masks)
    before = group.support()
    assert group.support() is before  # cached while no mask changes
    weight, values = grad_masks[0]
    drop, grow = values.view(-1).nonzero()[:5, 0], (values.view(-1) == 0).nonzero()[:5, 0]
    with torch.no_grad():  # as engine.methods.dst does
        values.view(-1)[drop] = 0
        values.view(-1)[grow] = 1
        weight.view(-1)[drop] = 0
    after = group.support()
    assert after is not before
    assert set(grow.tolist()) <= set(after.local[0].tolist())
    assert not set(drop.tolist()) & set(after.local[0].tolist())
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    _assert_same(_step(model, penalty, x, y), _step(model, bayes.start_training(model, 100, 0), x, y))


def test_the_masks_hold_only_while_their_training_lives():
    model, _, grad_masks = _ticket_net()
    group, = bayes.posteriors(model)
    penalty = bayes.start_training(model, 100, 0, grad_masks)
    assert group.support() is not None
    del penalty  # the training is over: the model may hold any weights now
    assert group.support() is None
    dense = models.build(ModelConfig(bayesian=True), (1, 8, 8), 10, 0)
    kept = bayes.start_training(dense, 100, 0, [(p, torch.ones_like(p)) for p in dense.parameters()])
    assert bayes.posteriors(dense)[0].support() is None  # every weight kept: compaction would not pay
    del kept


def test_a_graph_dropped_before_its_backward_frees_its_buffers():
    """(It used to keep them, and its graph, alive for good: ~5 MB per `kl(model)` at 784 inputs.)"""
    model, _, grad_masks = _ticket_net()
    group, = bayes.posteriors(model)
    for masks in ((), grad_masks):
        penalty = bayes.start_training(model, 100, 0, masks)
        bayes.kl(model)
        buffers = group._buffers
        assert not buffers.in_use()
        model(torch.randn(4, 1, 8, 8)).sum()  # a forward pass whose graph (and KL, kept for the penalty) is dropped
        penalty()
        assert group._buffers is buffers and not buffers.in_use()
        del penalty


def test_training_a_ticket_keeps_pruned_weights_and_matches_either_way(monkeypatch):
    """engine.trainer hands its masks over: through training, pruned mu and rho stay exactly 0 / untouched, with
    no optimizer state, whichever way the posterior is computed, and both ways train alike (float rounding)."""
    digits = load(DataConfig())
    cfg = TrainConfig(epochs=1, batch_size=128)
    results = {}
    for below in (0.0, 1.01):  # over all weights, then compact
        monkeypatch.setattr(bayes._Support, "COMPACT_BELOW", below)
        model = models.build(ModelConfig(bayesian=True), digits.input_shape, digits.num_classes, 0)
        mask = M.prune_to_density(M.magnitude_scores(model, M.ones(model)), M.ones(model), 0.2, 0.5,
                                  "layerwise", M.output_layer(model))
        M.apply(model, mask)
        params = dict(model.named_parameters())
        rho0 = {n: params[n[:-len("weight")] + "rho"].detach().clone() for n in mask}
        opt_box = []
        trainer.train(model, digits, cfg, mask, seed=0, on_optimizer=opt_box.append)
        for n, keep in mask.items():
            rho = params[n[:-len("weight")] + "rho"]
            assert (params[n][~keep] == 0).all() and torch.equal(rho[~keep], rho0[n][~keep])
            for p in (params[n], rho):
                state = opt_box[0].state[p]
                assert (state["exp_avg"][~keep] == 0).all() and (state["exp_avg_sq"][~keep] == 0).all()
        results[below] = model.state_dict()
    a, b = results.values()
    for n in a:
        assert torch.allclose(a[n], b[n], atol=2e-4), n


@pytest.mark.parametrize("compact", ["kept rho", True, False])
@pytest.mark.parametrize("model_name", ["lenet300", "conv2"])
def test_a_training_step_runs_under_bf16_autocast(model_name, compact):
    model, _, grad_masks = _ticket_net(model_name)
    opt = trainer.make_optimizer(model.parameters(), TrainConfig())
    penalty = bayes.start_training(model, 100, 0, grad_masks if compact else (), opt if compact == "kept rho" else None)
    group, = bayes.posteriors(model)
    assert (group.support() is not None) == bool(compact) and (group._kept is not None) == (compact == "kept rho")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(torch.randn(8, 1, 8, 8)), torch.randint(0, 10, (8,)))
    (loss + penalty()).backward()
    trained = [p for g in opt.param_groups for p in g["params"]]  # (the kept rho in place of the layers' rho)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trained)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_posteriors_softplus_is_torchs(dtype):
    x = torch.cat([torch.linspace(-120, 120, 20001, dtype=dtype), torch.tensor([0.0, 20.0, 80.0, 100.0], dtype=dtype)])
    got, want = bayes._softplus(x, torch.empty_like(x)), F.softplus(x)
    assert torch.isfinite(got).all() and torch.allclose(got, want, rtol=2e-7 if dtype == torch.float32 else 1e-9,
                                                        atol=1e-37)


def test_dynamic_sparse_training_of_a_bayesian_net_follows_its_changing_mask(tmp_path, monkeypatch):
    """RigL on a Bayesian net: the mask changes in place every --dst-interval steps; the support is rebuilt each
    time, and the stored ticket has mu exactly 0 and no variance wherever its final mask prunes."""
    import engine
    from conftest import tiny

    built = []
    real = bayes._Support.__init__

    def spy(self, layers, masks, key):
        real(self, layers, masks, key)
        built.append(key)
    monkeypatch.setattr(bayes._Support, "__init__", spy)
    cfg = tiny(**{"prune.method": "rigl", "prune.density": 0.2, "prune.dst_interval": 10, "train.epochs": 3,
                  "prune.controls": (), "model.bayesian": True, "model.mc_samples": 2})
    s = engine.run(cfg, runs_dir=tmp_path)
    updates = len(range(10, int(0.75 * s["levels"][0]["iterations"]), 10))
    assert updates >= 3 and len(built) >= updates + 1, (updates, len(built))
    mask, weights = engine.RunStore(tmp_path, s["run_id"]).load_level("ticket", 1)
    sigma = bayes.sigmas(weights)
    for n, keep in mask.items():
        assert (weights[n][~keep] == 0).all() and (sigma[n][~keep] == 0).all() and (sigma[n][keep] > 0).all()


@pytest.mark.parametrize("compact", [True, False])
def test_a_gradient_that_does_not_own_its_memory_is_not_written_into(compact):
    """The backward pass writes rho's and mu's gradients into the incoming ones when they own their memory; the
    gradient of a sum of a std is one expanded scalar, which must be copied first (it raised before)."""
    model, mask, grad_masks = _ticket_net()
    penalty = bayes.start_training(model, 100, 0, grad_masks if compact else ())  # (kept: the support lives with it)
    group, = bayes.posteriors(model)
    assert (group.support() is not None) == compact and penalty is not None
    sum(group.take(layer)[1].sum() for layer in group.layers).backward()
    for layer in group.layers:  # d sum(sigma^2 alive) / d rho = 2 sigma sigmoid(rho) alive
        alive = (layer.weight != 0).to(layer.rho.dtype)
        sigma = F.softplus(layer.rho.detach())
        want = 2 * sigma * torch.sigmoid(layer.rho.detach()) * alive
        assert torch.allclose(layer.rho.grad, want, rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------- the optimizer steps rho's kept entries (_KeptRho)
def _train(model, grad_masks, optimizer_name, hand_over, steps=6, between=None):
    """A few trainer-like steps (masked gradients, then the optimizer); the optimizer handed to start_training or
    not. `between(step, model, opt)` runs after each step, as the trainer's on_step does."""
    opt = trainer.make_optimizer(model.parameters(), TrainConfig(optimizer=optimizer_name, lr=1e-2))
    penalty = bayes.start_training(model, 100, 0, grad_masks, opt if hand_over else None)
    g = torch.Generator().manual_seed(5)
    for step in range(steps):
        x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        loss = F.cross_entropy(model(x), y) + penalty()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch._foreach_mul_([p.grad for p, _ in grad_masks], [m for _, m in grad_masks])
        opt.step()
        if between is not None:
            between(step, model, opt)
    return opt, penalty


def _rhos(model):
    return [layer.rho for _, layer in bayes.layers(model)]


def _in_groups(opt, p):
    return any(q is p for g in opt.param_groups for q in g["params"])


@pytest.mark.parametrize("optimizer_name", ["adam", "sgd"])
def test_the_optimizer_stepping_the_kept_rho_trains_as_stepping_rho_whole(optimizer_name):
    model, mask, grad_masks = _ticket_net()
    twin = copy.deepcopy(model)
    twin_masks = [(dict(twin.named_parameters())[n], m) for n, (_, m) in zip(mask, grad_masks)]
    opt, penalty = _train(model, grad_masks, optimizer_name, hand_over=True)
    twin_opt, twin_penalty = _train(twin, twin_masks, optimizer_name, hand_over=False)
    kept = bayes.posteriors(model)[0]._kept
    assert kept is not None and _in_groups(opt, kept.param) and kept.param.numel() == sum(k.sum() for k in mask.values())
    for rho in _rhos(model):  # while the training lives: rho is not the optimizer's, has no gradient and no state
        assert not _in_groups(opt, rho) and rho.grad is None and not opt.state.get(rho)
    want = twin.state_dict()
    for n, value in model.state_dict().items():  # bit for bit: an elementwise optimizer over the same entries
        assert torch.equal(value, want[n]), n
    del penalty, twin_penalty  # the training is over: rho goes back to the optimizer, its state in rho's shape
    for rho, twin_rho in zip(_rhos(model), _rhos(twin)):
        assert _in_groups(opt, rho) and not _in_groups(opt, kept.param)
        state, twin_state = opt.state[rho], twin_opt.state[twin_rho]
        assert state.keys() == twin_state.keys()
        for key, value in state.items():
            assert value.shape == twin_state[key].shape and torch.allclose(value, twin_state[key], rtol=1e-6), key


def test_the_kept_rho_follow_a_changing_mask_and_rho_written_from_outside():
    """A mask changed in place (as dynamic sparse training does: dropped mu set to 0, grown rho at the initial sigma,
    their optimizer state zeroed) moves the kept entries and their Adam state; rho written between steps is
    gathered again. Both trainings match the optimizer stepping rho whole."""
    models_ = []
    for hand_over in (True, False):
        model, mask, grad_masks = _ticket_net()
        weight, values = grad_masks[0]
        rho = bayes.layers(model)[0][1].rho

        def between(step, model, opt, weight=weight, values=values, rho=rho):
            with torch.no_grad():
                if step == 1:
                    drop, grow = values.view(-1).nonzero()[:7, 0], (values.view(-1) == 0).nonzero()[:7, 0]
                    values.view(-1)[drop] = 0
                    values.view(-1)[grow] = 1
                    weight.view(-1)[drop] = 0
                    rho.view(-1)[grow] = bayes.inverse_softplus(0.05)
                    for p in (weight, rho):
                        for state in opt.state.get(p, {}).values():
                            if state.shape == p.shape:
                                state.view(-1)[drop] = 0
                                state.view(-1)[grow] = 0
                if step == 3:
                    rho.view(-1)[values.view(-1).nonzero()[:4, 0]] = -1.0
        _, penalty = _train(model, grad_masks, "adam", hand_over, steps=6, between=between)
        if hand_over:
            assert bayes.posteriors(model)[0]._kept.support.counts[0] == int(values.sum())
        models_.append(model)
    got, want = (m.state_dict() for m in models_)
    for n in want:
        assert torch.equal(got[n], want[n]), n


def test_a_training_that_fails_hands_rho_back_even_while_its_traceback_is_kept():
    """trainer.train ends the Bayesian training however it ends (engine.bayes.end_training), not when its penalty
    is collected: a kept traceback (a notebook after Ctrl-C, a failed job's future) holds the penalty, and a
    later training with another optimizer stepped a rho that the forward pass no longer read (no gradient)."""
    model, mask, _ = _ticket_net()
    digits = load(DataConfig())
    optimizers = []

    def interrupt(step, model):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as kept:  # `kept` holds the traceback, and with it the penalty
        trainer.train(model, digits, TrainConfig(epochs=1, batch_size=64), mask, seed=0, on_step=interrupt,
                      on_optimizer=optimizers.append)
    assert kept.value is not None
    group, = bayes.posteriors(model)
    assert group._kept is None and group.support() is None
    assert all(_in_groups(optimizers[0], rho) for rho in _rhos(model))
    mine = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [rho.detach().clone() for rho in _rhos(model)]
    loss = F.cross_entropy(model(torch.randn(8, 1, 8, 8)), torch.arange(8)) + bayes.kl(model) / 100
    loss.backward()
    mine.step()
    assert all(rho.grad is not None and not torch.equal(rho.detach(), b) for rho, b in zip(_rhos(model), before))


def test_an_optimizer_not_known_to_update_entry_by_entry_steps_rho_whole():
    model, _, grad_masks = _ticket_net()
    opt = torch.optim.Adagrad(model.parameters(), lr=1e-2)
    penalty = bayes.start_training(model, 100, 0, grad_masks, opt)
    loss = F.cross_entropy(model(torch.randn(8, 1, 8, 8)), torch.arange(8)) + penalty()
    loss.backward()
    opt.step()
    group, = bayes.posteriors(model)
    assert group.support() is not None and group._kept is None  # compact posterior, rho stepped whole
    assert all(rho.grad is not None and _in_groups(opt, rho) for rho in _rhos(model))
