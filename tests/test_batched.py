"""The batched trainer: K members trained as one computation end where each would end trained alone."""
import pytest
import torch

from engine import batched as B
from engine import masks as M
from engine import models, trainer
from engine.config import DataConfig, ModelConfig, TrainConfig
from engine.data import load
from engine.errors import Unsupported


@pytest.fixture(scope="module")
def digits():
    return load(DataConfig())


def _members(digits, mc, k=3, late=None):
    """k members with their own init and seed; odd ones pruned to 50% (one shared mask), `late` starts late."""
    nets = [models.build(mc, digits.input_shape, digits.num_classes, seed) for seed in range(k)]
    ones = M.ones(nets[0])
    mask = M.prune_step(M.magnitude_scores(nets[0], ones), ones, 0.5, 0.2, "layerwise", M.output_layer(nets[0]))
    return nets, [B.Member({n: v.clone() for n, v in net.state_dict().items()}, mask if i % 2 else None, seed=7 + i,
                           start_step=late if i == k - 1 and late else 0) for i, net in enumerate(nets)]


def _alone(net, digits, cfg, member):
    if member.mask is not None:
        M.apply(net, member.mask)
    result = trainer.train(net, digits, cfg, member.mask, seed=member.seed, start_step=member.start_step)
    return net.state_dict(), result


@pytest.mark.parametrize("cfg", [
    TrainConfig(epochs=2, batch_size=60),
    TrainConfig(epochs=1, batch_size=50, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3,
                lr_schedule="cosine", warmup=5, eval_every=7),
], ids=["adam", "sgd-momentum-wd-cosine"])
def test_members_end_as_if_trained_alone(digits, cfg):
    mc = ModelConfig(model="mlp", hidden=(32, 16))
    nets, members = _members(digits, mc, late=9)
    out = B.train_batched(nets[0], digits, cfg, members)
    for i, (net, member) in enumerate(zip(nets, members)):
        weights, alone = _alone(net, digits, cfg, member)
        for n, w in weights.items():
            torch.testing.assert_close(out.member(i)[n], w, atol=2e-6, rtol=1e-5, msg=f"member {i} {n}")
        got = out.results[i]
        assert got.early_stop_iteration == alone.early_stop_iteration
        assert [p["iteration"] for p in got.curve] == [p["iteration"] for p in alone.curve]
        for p, q in zip(got.curve, alone.curve):
            assert p["val_accuracy"] == q["val_accuracy"] and p["test_accuracy"] == q["test_accuracy"]
            assert p["train_loss"] == pytest.approx(q["train_loss"], rel=1e-5)
            assert p["val_loss"] == pytest.approx(q["val_loss"], rel=1e-5)


def test_convolutions_batch_too(digits):
    mc = ModelConfig(model="conv2", width=0.125)
    cfg = TrainConfig(epochs=1, batch_size=100)
    nets, members = _members(digits, mc, k=2)
    out = B.train_batched(nets[0], digits, cfg, members)
    for i, (net, member) in enumerate(zip(nets, members)):
        weights, _ = _alone(net, digits, cfg, member)
        for n, w in weights.items():
            torch.testing.assert_close(out.member(i)[n], w, atol=1e-5, rtol=1e-4)


def test_pruned_entries_stay_zero_with_no_optimizer_state(digits, monkeypatch):
    mc = ModelConfig(model="mlp", hidden=(32, 16))
    cfg = TrainConfig(epochs=1, batch_size=64, weight_decay=1e-2)
    nets, members = _members(digits, mc, k=3, late=4)  # members 0, 1 start together, member 2 later
    made = []
    real = B.make_optimizer
    monkeypatch.setattr(B, "make_optimizer", lambda params, c: made.append(real(params, c)) or made[-1])
    mask = members[1].mask
    seen = []

    def on_step(step, weights):
        for n, keep in mask.items():
            assert (weights[n][1][~keep] == 0).all(), f"pruned weight of {n} moved at step {step}"
        if step <= 4:  # member 2 has not started: untouched
            assert torch.equal(weights["out.bias"][2], members[2].init["out.bias"])
        seen.append(step)

    out = B.train_batched(nets[0], digits, cfg, members, on_step=on_step)
    assert seen and seen[-1] == trainer.total_steps(len(digits.train), cfg)
    assert len(made) == 2  # one optimizer per start step
    leaves = [p for group in made[0].param_groups for p in group["params"]]
    for n, keep in mask.items():
        state = made[0].state[leaves[list(mask).index(n) * 2]]  # weights and biases alternate
        assert state["exp_avg"].shape[1:] == keep.shape
        assert (state["exp_avg"][1][~keep] == 0).all() and (state["exp_avg_sq"][1][~keep] == 0).all()
        assert state["exp_avg"][1][keep].abs().sum() > 0 and state["exp_avg"][0].abs().sum() > 0
        assert (out.weights[n][1][~keep] == 0).all()


def test_a_member_starting_at_the_end_is_evaluated_as_it_is(digits):
    mc = ModelConfig(model="mlp", hidden=(16,))
    cfg = TrainConfig(epochs=1, batch_size=200)
    nets, members = _members(digits, mc, k=2)
    total = trainer.total_steps(len(digits.train), cfg)
    members[1].start_step = total
    out = B.train_batched(nets[0], digits, cfg, members)
    assert [p["iteration"] for p in out.results[1].curve] == [total]
    start = members[1].init["out.weight"] * members[1].mask["out.weight"]
    torch.testing.assert_close(out.member(1)["out.weight"], start)
    nets[1].load_state_dict(out.member(1))
    assert out.results[1].final["test_accuracy"] == trainer.evaluate(nets[1], digits.test)[1]


def test_evaluate_batched_matches_trainer_evaluate(digits):
    mc = ModelConfig(model="mlp", hidden=(16,))
    nets = [models.build(mc, digits.input_shape, digits.num_classes, s) for s in range(3)]
    loss, acc = B.evaluate_batched(nets[0], B.stack_weights([n.state_dict() for n in nets]), digits.test)
    for i, net in enumerate(nets):
        ref_loss, ref_acc = trainer.evaluate(net, digits.test)
        assert float(acc[i]) == ref_acc and float(loss[i]) == pytest.approx(ref_loss, rel=1e-6)


def test_batchnorm_statistics_are_kept_per_member(digits):
    mc = ModelConfig(model="resnet20", width=0.25)
    cfg = TrainConfig(epochs=1, batch_size=200)
    nets, members = _members(digits, mc, k=3, late=2)  # a late group: its statistics are written back per group
    out = B.train_batched(nets[0], digits, cfg, members)
    for i, (net, member) in enumerate(zip(nets, members)):
        weights, alone = _alone(net, digits, cfg, member)
        for n, w in weights.items():
            if w.is_floating_point():
                torch.testing.assert_close(out.member(i)[n], w, atol=1e-4, rtol=1e-4, msg=f"member {i} {n}")
            else:
                assert torch.equal(out.member(i)[n], w), n  # num_batches_tracked
        assert out.results[i].final["test_accuracy"] == pytest.approx(alone.final["test_accuracy"], abs=1 / 360)


def test_bayesian_models_are_refused_in_one_line(digits):
    net = models.build(ModelConfig(model="mlp", hidden=(8,), bayesian=True), digits.input_shape, digits.num_classes, 0)
    with pytest.raises(Unsupported, match="Bayesian"):
        B.train_batched(net, digits, TrainConfig(epochs=1), [B.Member(net.state_dict())])


def test_amp_bf16_runs_the_batched_step_under_autocast_like_the_trainer(digits):
    mc = ModelConfig(model="mlp", hidden=(32, 16))
    cfg = TrainConfig(epochs=1, batch_size=100, amp="bf16")
    nets, members = _members(digits, mc, k=2)
    out = B.train_batched(nets[0], digits, cfg, members)
    fp32 = B.train_batched(nets[0], digits, TrainConfig(epochs=1, batch_size=100), members)
    for i, (net, member) in enumerate(zip(nets, members)):
        weights, _ = _alone(net, digits, cfg, member)
        for n, w in weights.items():  # bf16 matmuls: alike to bf16 precision, and unlike the float32 run
            torch.testing.assert_close(out.member(i)[n], w, atol=2e-2, rtol=0)
        assert (out.member(i)["out.weight"] - fp32.member(i)["out.weight"]).abs().max() > 1e-6


def test_the_direct_fused_adam_step_is_torchs_step_bit_for_bit():
    cfg = TrainConfig(weight_decay=1e-2)
    made = []
    for _ in range(2):
        torch.manual_seed(0)
        params = [torch.randn(4, 3, 5).requires_grad_(), torch.randn(4, 3).requires_grad_()]
        opt = trainer.make_optimizer(params, cfg)
        made.append((params, opt, B._stepper(opt)))
    assert made[1][2] != made[1][1].step  # the direct path is taken for the trainer's fused Adam
    for step in range(4):
        grads = [torch.randn(4, 3, 5), torch.randn(4, 3)]
        for params, opt, direct in made:
            for g in opt.param_groups:
                g["lr"] = 1e-2 / (step + 1)  # a schedule changes the lr between steps
            for p, g in zip(params, grads):
                p.grad = g.clone()
        made[0][1].step()
        made[1][2]()
        for p, q in zip(made[0][0], made[1][0]):
            assert torch.equal(p, q)
    sgd = torch.optim.SGD(made[0][0], lr=0.1)
    assert B._stepper(sgd) == sgd.step  # any other optimizer: its own step


def test_the_direct_step_waits_for_every_parameters_state():
    """A parameter with no gradient at the first step has no Adam state yet: the stepper must not read it."""
    made = []
    for _ in range(2):
        torch.manual_seed(0)
        params = [torch.randn(3, 2).requires_grad_(), torch.randn(3).requires_grad_()]
        opt = trainer.make_optimizer(params, TrainConfig())
        made.append((params, opt, B._stepper(opt)))
    for step in range(3):
        grads = [torch.randn(3, 2), None if step == 0 else torch.randn(3)]  # the second reached from step 1 on
        for params, _, _ in made:
            for p, g in zip(params, grads):
                p.grad = None if g is None else g.clone()
        made[0][1].step()
        made[1][2]()  # raised KeyError('exp_avg') at the first step
        for p, q in zip(made[0][0], made[1][0]):
            assert torch.equal(p, q)


def test_callers_that_batch_by_default_can_refuse_layers_never_tested_batched():
    """A zoo and the instability analysis batch without being asked: a layer the batched trainer has not been
    tested on (dropout fails inside vmap) is refused, so they fall back or say so in one line."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 2))
    B.check_batchable(model)  # (asked for: tried)
    with pytest.raises(Unsupported, match="has not been tested on: Dropout"):
        B.check_batchable(model, tested_only=True)
