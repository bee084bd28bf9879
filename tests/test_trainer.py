import pytest
import torch

from engine import masks as M
from engine import trainer
from engine.config import TrainConfig
from engine.data import load
from engine.config import DataConfig
from engine.models import build
from engine.config import ModelConfig


@pytest.fixture(scope="module")
def digits():
    return load(DataConfig())


def _ticket(digits, seed=0):
    model = build(ModelConfig(), digits.input_shape, digits.num_classes, seed)
    mask = M.prune_step(M.magnitude_scores(model, M.ones(model)), M.ones(model), 0.7, 0.3, "layerwise",
                        "out.weight")
    M.apply(model, mask)
    return model, mask


@pytest.mark.parametrize("optimizer,momentum,weight_decay", [("sgd", 0.9, 1e-3), ("adam", 0.0, 1e-3)])
def test_mask_invariants_hold_after_every_step(digits, optimizer, momentum, weight_decay):
    model, mask = _ticket(digits)
    cfg = TrainConfig(optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 1e-3, momentum=momentum,
                      weight_decay=weight_decay, epochs=2, batch_size=64)
    params = dict(model.named_parameters())
    checked = []

    def on_step(step, m):
        for n, keep in mask.items():
            p = params[n]
            assert (p[~keep] == 0).all(), f"pruned weight of {n} moved at step {step}"
            assert (p.grad[~keep] == 0).all(), f"pruned weight of {n} got a gradient at step {step}"
        checked.append(step)

    before = {n: p.detach().clone() for n, p in params.items()}
    trainer.train(model, digits, cfg, mask, seed=0, on_step=on_step)
    assert len(checked) == trainer.total_steps(len(digits.train), cfg)
    for n, keep in mask.items():  # survivors did train
        assert not torch.equal(params[n][keep], before[n][keep])
    # the optimizer state of pruned weights is zero: rebuild the optimizer's view via one more step
    opt = trainer.make_optimizer(model.parameters(), cfg)
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(digits.train.x[:64]), digits.train.y[:64]).backward()
    for n, keep in mask.items():
        params[n].grad.mul_(keep)
    opt.step()
    for n, keep in mask.items():
        state = opt.state[params[n]]
        for key in ("momentum_buffer", "exp_avg", "exp_avg_sq"):
            if key in state:
                assert (state[key][~keep] == 0).all(), (n, key)
        assert (params[n][~keep] == 0).all()


def test_optimizer_state_inside_training_is_zero_for_pruned(digits, monkeypatch):
    model, mask = _ticket(digits)
    cfg = TrainConfig(optimizer="adam", epochs=1, batch_size=128, weight_decay=1e-2)
    made = []
    real = trainer.make_optimizer
    monkeypatch.setattr(trainer, "make_optimizer", lambda params, c: made.append(real(params, c)) or made[-1])
    trainer.train(model, digits, cfg, mask, seed=0)
    params = dict(model.named_parameters())
    for n, keep in mask.items():
        state = made[0].state[params[n]]
        assert (state["exp_avg"][~keep] == 0).all() and (state["exp_avg_sq"][~keep] == 0).all()
        assert state["exp_avg"][keep].abs().sum() > 0


def test_training_is_deterministic_for_a_seed(digits):
    cfg = TrainConfig(epochs=2)
    results = []
    for _ in range(2):
        model, mask = _ticket(digits)
        r = trainer.train(model, digits, cfg, mask, seed=3)
        results.append((r.curve, [p.detach().clone() for p in model.parameters()]))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


def test_dropout_draws_depend_on_the_seed_and_step_only(digits):
    """Dropout draws from the global generator: each step seeds it from (seed, step), so what ran before in
    the process (another run of `lottery compare`, a method's own draws) changes nothing, and a training
    resumed at step k continues the uninterrupted one's draws."""
    def dropout_net():
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                   torch.nn.Dropout(0.5), torch.nn.Linear(32, 10))
    first = dropout_net()

    def net():  # a new net (its initialisation draws from the global generator) with the first's weights
        model = dropout_net()
        model.load_state_dict(first.state_dict())
        return model
    cfg = TrainConfig(optimizer="sgd", momentum=0.0, lr=0.05, epochs=1)
    full = net()
    trainer.train(full, digits, cfg, None, seed=1)
    torch.rand(100)  # the global generator moves on, as other work in the process would move it
    again = net()
    trainer.train(again, digits, cfg, None, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(full.parameters(), again.parameters()))
    k, snap = 7, {}
    part = net()
    trainer.train(part, digits, cfg, None, seed=1,
                  on_step=lambda s, m: snap.update({n: v.clone() for n, v in m.state_dict().items()}) if s == k else None)
    resumed = net()
    resumed.load_state_dict(snap)
    torch.rand(100)
    trainer.train(resumed, digits, cfg, None, seed=1, start_step=k)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(full.parameters(), resumed.parameters()))


def test_starting_at_step_k_continues_the_same_data_order(digits):
    """Training 0->T equals training 0->k, then k->T from the saved weights (plain SGD has no state)."""
    cfg = TrainConfig(optimizer="sgd", momentum=0.0, lr=0.05, epochs=2)
    k = 30
    full, _ = _ticket(digits)
    trainer.train(full, digits, cfg, None, seed=1)

    part, _ = _ticket(digits)
    snap = {}
    trainer.train(part, digits, TrainConfig(optimizer="sgd", momentum=0.0, lr=0.05, epochs=2), None, seed=1,
                  on_step=lambda s, m: snap.update({n: v.clone() for n, v in m.state_dict().items()}) if s == k else None)
    resumed, _ = _ticket(digits)
    resumed.load_state_dict({n: v.clone() for n, v in snap.items()})
    trainer.train(resumed, digits, cfg, None, seed=1, start_step=k)
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_early_stop_iteration_is_the_minimum_validation_loss(digits):
    model, mask = _ticket(digits)
    r = trainer.train(model, digits, TrainConfig(epochs=4, eval_every=7), mask, seed=0)
    best = min(r.curve, key=lambda p: p["val_loss"])
    assert r.early_stop_iteration == best["iteration"]
    assert [p["iteration"] for p in r.curve][:3] == [7, 14, 21]


def test_lr_schedules():
    cfg = TrainConfig(lr=1.0, lr_schedule="step")
    assert [trainer.lr_at(s, 100, cfg) for s in (0, 49, 50, 75)] == [1.0, 1.0, pytest.approx(0.1), pytest.approx(0.01)]
    cos = TrainConfig(lr=1.0, lr_schedule="cosine", warmup=10)
    assert trainer.lr_at(0, 100, cos) == pytest.approx(0.1)
    assert trainer.lr_at(50, 100, cos) == pytest.approx(0.5)
