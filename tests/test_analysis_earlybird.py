"""Early-bird tracker: fires once the mask stops moving, not while it moves; its rules and L1 penalty."""
import pytest
import torch
from torch import nn

from engine import masks as M
from engine import data as D
from engine import models, trainer
from engine.analysis import (EarlyBirdFound, EarlyBirdTracker, bn_l1_penalty, channel_rule, magnitude_rule,
                             mask_distance)
from engine.config import ModelConfig

from conftest import tiny


def _mask(bits):
    return {"a.weight": torch.tensor(bits[:6], dtype=torch.bool).view(2, 3),
            "b.weight": torch.tensor(bits[6:], dtype=torch.bool)}


def stabilising_sequence(epochs=12, settle=6, n=200, seed=0):
    """Masks over n entries: until `settle` each epoch flips 30% of the entries, after it 1% at most."""
    g = torch.Generator().manual_seed(seed)
    bits = torch.rand(n, generator=g) < 0.5
    out = []
    for epoch in range(epochs):
        flip = torch.rand(n, generator=g) < (0.3 if epoch < settle else 0.01)
        bits = bits ^ flip
        out.append({"w": bits.clone()})
    return out


def test_mask_distance_is_the_fraction_of_differing_entries():
    a = _mask([1, 1, 0, 0, 1, 0, 1, 1, 0, 0])
    b = _mask([1, 0, 0, 0, 1, 0, 1, 1, 1, 0])
    assert mask_distance(a, b) == pytest.approx(2 / 10)
    assert mask_distance(a, a) == 0.0
    with pytest.raises(ValueError):
        mask_distance(a, {"a.weight": a["a.weight"]})


def test_fires_on_a_stabilising_sequence_at_the_first_stable_window():
    tracker = EarlyBirdTracker(window=5, eps=0.1)
    fired = [tracker.add(m, epoch) for epoch, m in enumerate(stabilising_sequence())]
    # masks 5..9 differ only by the small flips of epochs 6..9: the first quiet window ends at epoch 9
    assert fired.index(True) == 9 and all(fired[9:])
    assert tracker.detected_epoch == 9
    assert torch.equal(tracker.ticket["w"], stabilising_sequence()[9]["w"])
    assert len(tracker.recent_distances[9]) == 4 and max(tracker.recent_distances[9]) < 0.1
    assert max(tracker.recent_distances[8]) >= 0.1


def test_does_not_fire_while_the_mask_keeps_changing():
    tracker = EarlyBirdTracker(window=5, eps=0.1)
    for epoch, m in enumerate(stabilising_sequence(epochs=20, settle=20)):
        assert not tracker.add(m, epoch)
    assert tracker.detected_epoch is None and tracker.ticket is None


def test_distance_matrix_matches_pairwise_distances():
    seq = stabilising_sequence(epochs=7)
    tracker = EarlyBirdTracker()
    for epoch, m in enumerate(seq):
        tracker.add(m, epoch)
    d = tracker.distance_matrix()
    assert d.shape == (7, 7)
    for i in range(7):
        for j in range(7):
            assert d[i, j].item() == pytest.approx(mask_distance(seq[i], seq[j]), abs=1e-7)
    record = tracker.to_dict()
    assert record["epochs"] == list(range(7)) and len(record["distance_matrix"]) == 7


def test_magnitude_rule_keeps_the_requested_density():
    model = models.build(ModelConfig(width=0.2), (64,), 10, seed=0)
    mask = magnitude_rule(0.25)(model)
    hidden = [n for n in mask if n != "out.weight"]
    kept = sum(int(mask[n].sum()) for n in hidden)
    assert kept == round(0.25 * sum(mask[n].numel() for n in hidden))
    assert bool(mask["out.weight"].all())


def test_channel_rule_prunes_a_global_fraction_of_the_smallest_gammas():
    model = models.build(ModelConfig(model="resnet20", width=0.25), (1, 8, 8), 10, seed=0)
    bns = {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in bns.values():
            m.weight.copy_(torch.rand(m.weight.shape, generator=g))
    mask = channel_rule(0.3)(model)
    assert list(mask) == list(bns)
    gammas = torch.cat([m.weight.detach().abs() for m in bns.values()])
    flat = torch.cat(list(mask.values()))
    assert int((~flat).sum()) == round(0.3 * gammas.numel())
    assert gammas[~flat].max() <= gammas[flat].min()  # one global threshold


def test_bn_l1_penalty_adds_lambda_sign_gamma_to_the_gradients():
    model = models.build(ModelConfig(model="resnet20", width=0.25), (1, 8, 8), 10, seed=0)
    with torch.no_grad():
        model.bn.weight.uniform_(-1, 1)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])

    def grad():
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        return model.bn.weight.grad.clone()

    plain = grad()
    with bn_l1_penalty(model, lam=1e-2):
        penalised = grad()
    assert torch.allclose(penalised - plain, 1e-2 * torch.sign(model.bn.weight.detach()), atol=1e-5)
    assert torch.equal(grad(), plain)  # hooks removed on exit


def test_tracker_hook_runs_per_epoch_in_the_trainer_and_can_stop_it():
    cfg = tiny(**{"train.epochs": 30, "model.width": 0.2})
    data = D.load(cfg.data)
    per_epoch = trainer.steps_per_epoch(len(data.train), cfg.train)
    model = models.build(cfg.model, data.input_shape, data.num_classes, 0)
    tracker = EarlyBirdTracker(magnitude_rule(0.2), window=5, eps=0.1)
    with pytest.raises(EarlyBirdFound):
        trainer.train(model, data, cfg.train, None, seed=0, on_step=tracker.hook(per_epoch, stop=True))
    assert tracker.detected and tracker.epochs == list(map(float, range(1, len(tracker.epochs) + 1)))
    assert tracker.detected_epoch == tracker.epochs[-1] < 30
    assert M.density({n: m for n, m in tracker.ticket.items() if n != "out.weight"}) == pytest.approx(0.2, abs=1e-3)
