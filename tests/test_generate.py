"""DeepWeightFlow (engine.generate): weight space <-> rows, the flow, the report, the store, bad inputs."""
import json
import threading

import pytest
import torch

import engine
from engine import generate as G
from engine import masks as M
from engine import zoo as Z
from engine.batched import member_weights
from engine.cli import main
from engine.errors import ConfigError, RunCancelled

from conftest import tiny

DENSE = {"model.model": "mlp", "model.hidden": (12,), "train.epochs": 2, "train.batch_size": 100,
         "train.optimizer": "sgd", "train.lr": 0.05, "device": "cpu"}
FAST = dict(steps=30, samples=4, ode_steps=4, hidden=32)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One runs dir with a 5-member dense zoo and a 3-member ticket zoo (trained once for the module)."""
    runs_dir = tmp_path_factory.mktemp("gen") / "runs"
    options = Z.ZooOptions(members=5)
    dense = Z.train_zoo(options, Z.zoo_config(options, DENSE, runs_dir=runs_dir), runs_dir=runs_dir)["run_id"]
    cfg = tiny(**{"model.model": "mlp", "model.hidden": (12,), "prune.levels": 1, "prune.controls": (),
                  "prune.rewind": "iter:5", "train.epochs": 1, "train.batch_size": 100})
    ticket_run = engine.run(cfg, runs_dir=runs_dir)["run_id"]
    t_opts = Z.ZooOptions(members=3, ticket=ticket_run)
    ticket = Z.train_zoo(t_opts, Z.zoo_config(t_opts, {}, runs_dir=runs_dir), runs_dir=runs_dir)["run_id"]
    return runs_dir, dense, ticket, ticket_run


# ---------------------------------------------------------------- pure pieces
def test_flatten_and_unflatten_are_inverse_and_keep_pruned_entries_zero():
    g = torch.Generator().manual_seed(0)
    stack = {"a.weight": torch.randn(3, 4, 5, generator=g), "a.bias": torch.randn(3, 4, generator=g),
             "bn.num_batches_tracked": torch.zeros(3, dtype=torch.long)}
    mask = {"a.weight": torch.rand(4, 5, generator=g) > 0.5}
    stack["a.weight"] *= mask["a.weight"]
    x = G.flatten(stack, mask)
    assert x.shape == (3, int(mask["a.weight"].sum()) + 4)  # only the kept entries, plus the bias
    back = G.unflatten(x, stack, mask)
    for k in stack:
        assert torch.equal(back[k], stack[k])
    noise = G.unflatten(torch.randn(2, x.shape[1]), stack, mask)
    assert (noise["a.weight"][:, ~mask["a.weight"]] == 0).all() and noise["a.weight"].shape == (2, 4, 5)


def test_coordinates_round_trip_with_pca_and_gaussian_rows_stay_in_the_zoos_span():
    x = torch.randn(6, 40, generator=torch.Generator().manual_seed(1))
    c = G.Coordinates.fit(x, pca=5, standardise="coordinate")  # six points span five directions: PCA 5 loses nothing
    z = c.encode(x)
    assert z.shape == (6, 5)
    torch.testing.assert_close(z.std(0), torch.ones(5))
    torch.testing.assert_close(c.decode(z), x, atol=1e-4, rtol=1e-4)
    g = G.Coordinates.fit(x, pca=5)  # global: one scale, the zoo's shape kept (variances stay unequal)
    zg = g.encode(x)
    torch.testing.assert_close(zg.var(0).sum(), torch.tensor(5.0))
    assert zg.std(0)[0] > 1.2 * zg.std(0)[-1]
    torch.testing.assert_close(zg / zg.norm(dim=1, keepdim=True).max(), (x - x.mean(0)) @ g.basis
                               / ((x - x.mean(0)) @ g.basis).norm(dim=1, keepdim=True).max())
    torch.testing.assert_close(g.decode(zg), x, atol=1e-4, rtol=1e-4)
    rows = G.gaussian_rows(x, 50, seed=0)
    centred, basis = rows - x.mean(0), (x - x.mean(0)).T
    residual = centred - centred @ torch.linalg.pinv(basis).T @ basis.T
    assert residual.abs().max() < 1e-3
    with pytest.raises(ConfigError, match="^pca: 6 .*1..5"):  # the field, as the app labels it (the CLI: --pca)
        G.check_pca(6, 6)


def test_disagreement_and_novelty_measure_what_they_say():
    preds = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 0], [1, 1, 2, 0]])
    # pairs: (0,1) differ on 1 of 4, (0,2) on 2, (1,2) on 1 -> mean 4/12
    assert G.disagreement(preds) == pytest.approx(1 / 3)
    zoo = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    copies = G.novelty(zoo.clone(), zoo)
    assert copies["near_copy_share"] == 1.0 and copies["generated_nn_median"] == 0.0
    assert copies["zoo_nn"] == [3.0, 3.0, 4.0]
    far = G.novelty(torch.tensor([[10.0, 10.0]]), zoo)
    assert far["near_copy_share"] == 0.0 and far["generated_nn"][0] == pytest.approx((100 + 36) ** 0.5)  # to (0, 4)
    assert G.nearest_other(zoo).tolist() == [3.0, 3.0, 4.0]  # given once, for several sets: the same measures
    assert G.novelty(torch.tensor([[10.0, 10.0]]), zoo, G.nearest_other(zoo)) == far


def test_family_placement_says_which_nets_lie_inside_a_familys_cloud():
    # two families: {0, 1} around (0, 0) with radius 1, {2, 3} around (10, 0) with radius 2
    zoo = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [8.0, 0.0], [12.0, 0.0]])
    generated = torch.tensor([[0.5, 0.0], [10.0, 1.5], [5.0, 0.0], [0.0, 3.0]])
    f = G.family_placement(generated, zoo, [0, 0, 1, 1])
    assert (f["families"], f["between_median"], f["radius_median"]) == (2, 10.0, 1.0)  # torch's lower median
    assert f["inside_share"] == 0.5  # (0.5, 0) and (10, 1.5) inside; (5, 0) between them, (0, 3) beyond family 0
    assert f["generated_centre_median"] == pytest.approx(1.5)  # distances 0.5, 1.5, 5, 3


def test_the_flow_learns_where_the_data_is():
    g = torch.Generator().manual_seed(0)
    data = torch.tensor([3.0, -2.0]) + 0.1 * torch.randn(64, 2, generator=g)
    velocity, losses = G.train_flow(data, steps=300, hidden=64, lr=3e-3, progress_every=50)
    assert losses[-1] < losses[0]
    samples = G.sample_flow(velocity, 256, ode_steps=20)
    assert (samples.mean(0) - torch.tensor([3.0, -2.0])).abs().max() < 0.4


def test_temperature_scales_the_starting_noise_and_ema_averages_the_velocity_weights():
    g = torch.Generator().manual_seed(0)
    data = torch.tensor([3.0, -2.0]) + torch.randn(64, 2, generator=g)
    velocity, _ = G.train_flow(data, steps=300, hidden=64, lr=3e-3)
    # the samples' spread follows the noise's: a cooler start gives a narrower cloud about the same centre
    hot, cold = (G.sample_flow(velocity, 512, ode_steps=20, temperature=t) for t in (1.0, 0.3))
    assert cold.std(0).mean() < 0.6 * hot.std(0).mean()
    assert (cold.mean(0) - hot.mean(0)).abs().max() < 0.4
    # EMA: the same training, sampled with averaged weights (not the last step's), which still learned the data
    averaged, _ = G.train_flow(data, steps=300, hidden=64, lr=3e-3, ema=0.99)
    assert isinstance(averaged, G.Velocity)
    differ = [not torch.equal(a, b) for a, b in zip(averaged.state_dict().values(), velocity.state_dict().values())]
    assert any(differ)
    assert (G.sample_flow(averaged, 256, ode_steps=20).mean(0) - torch.tensor([3.0, -2.0])).abs().max() < 0.4


def test_options_added_later_keep_the_ids_of_generations_stored_before_them():
    import dataclasses
    import hashlib

    base = G.GenerateOptions(repair="none", **FAST)  # what every generation stored before REPAIR was
    before = {k: v for k, v in dataclasses.asdict(base).items() if k not in ("temperature", "ema", "repair")}
    digest = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
    assert G.generation_id(base) == "gen-" + digest[:10]
    assert len({G.generation_id(base), G.generation_id(G.GenerateOptions(temperature=0.5, **FAST)),
                G.generation_id(G.GenerateOptions(ema=0.9, **FAST)),
                G.generation_id(G.GenerateOptions(repair="mix", **FAST))}) == 4


# ---------------------------------------------------------------- REPAIR
def _random_stack(make, n: int, seed: int, mask=None):
    """n networks of `make()`'s architecture with independent random weights (pruned entries 0 under mask)."""
    states = []
    for i in range(n):
        torch.manual_seed(seed + i)
        state = make().state_dict()
        states.append({k: v * mask[k] if mask is not None and k in mask else v for k, v in state.items()})
    return G.stack_weights(states)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_repair_gives_every_hidden_unit_the_target_statistics_and_keeps_pruned_weights_zero(arch):
    from engine.models import MLP, ConvNet

    make = (lambda: MLP(12, [7, 5], 3)) if arch == "mlp" else (lambda: ConvNet((1, 6, 6), [8], 3, 0.25))
    x = torch.randn((64, 12) if arch == "mlp" else (64, 1, 6, 6), generator=torch.Generator().manual_seed(9))
    net = make()
    layers = G.repair_layers(net)
    assert layers == (["hidden.0", "hidden.1"] if arch == "mlp" else ["features.0", "features.2", "fc1", "fc2"])
    g = torch.Generator().manual_seed(1)
    mask = {k: torch.rand(v.shape, generator=g) > 0.4 for k, v in net.state_dict().items() if k.endswith("weight")}
    zoo = _random_stack(make, 4, 0, mask)
    stats = G.unit_statistics(make, zoo, x)
    assert list(stats) == layers and all(m.shape == s.shape == (4, m.shape[1]) for m, s in stats.values())
    # "generated" nets: the zoo's mean, whose units have a smaller spread than the members' (variance collapse),
    # toward the members' average; and member 1 toward a mix of members 0 and 2
    mean = {k: v.mean(0, keepdim=True) for k, v in zoo.items()}
    nets = {k: torch.cat([mean[k], v[1:2]]) for k, v in zoo.items()}
    weights = torch.tensor([[0.25] * 4, [0.3, 0.0, 0.7, 0.0]], dtype=torch.float64)
    targets = G.repair_targets(stats, weights)
    fixed = G.repair(make, nets, targets, x)
    after = G.unit_statistics(make, fixed, x)  # their own statistics now
    for k in layers:
        torch.testing.assert_close(after[k][0], targets[k][0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(after[k][1], targets[k][1], atol=1e-4, rtol=1e-4)
    before = G.unit_statistics(make, nets, x)
    assert any(not torch.allclose(before[k][1], targets[k][1], rtol=1e-2) for k in layers)  # it did change them
    for k, keep in mask.items():
        assert (fixed[k][:, ~keep] == 0).all()
    last = [k for k in mask][-1]  # the output layer is not touched
    assert torch.equal(fixed[last], nets[last])


def test_repair_toward_a_networks_own_statistics_leaves_its_function_unchanged():
    from engine.models import MLP

    make = lambda: MLP(12, [7, 5], 3)  # noqa: E731
    x = torch.randn(80, 12, generator=torch.Generator().manual_seed(3))
    zoo = _random_stack(make, 3, 5)
    one = {k: v[1:2] for k, v in zoo.items()}
    same = G.repair(make, one, G.unit_statistics(make, one, x), x)
    a, b = make(), make()
    a.load_state_dict(member_weights(one, 0))
    b.load_state_dict(member_weights(same, 0))
    probe = torch.randn(50, 12, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(b(probe), a(probe), atol=1e-5, rtol=1e-5)


def test_mixing_weights_are_the_convex_combination_of_members_nearest_each_net():
    zoo = torch.randn(5, 30, generator=torch.Generator().manual_seed(0))
    far = zoo.mean(0) + 10 * (zoo[3] - zoo.mean(0))  # beyond member 3, outside the zoo's hull
    rows = torch.stack([zoo[2], zoo.mean(0), 0.4 * zoo[0] + 0.6 * zoo[4], far])
    w = G.mixing_weights(G.Span(zoo), rows)
    assert w.shape == (4, 5) and (w >= 0).all()
    torch.testing.assert_close(w.sum(1), torch.ones(4, dtype=torch.float64))
    e = torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(w[0], e[2], atol=1e-4, rtol=0)
    torch.testing.assert_close(w[1], torch.full((5,), 0.2, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(w[2], 0.4 * e[0] + 0.6 * e[4], atol=1e-4, rtol=0)
    torch.testing.assert_close(w[3], e[3], atol=1e-4, rtol=0)  # the hull's nearest point: member 3


def test_repair_refuses_models_it_does_not_apply_to_in_one_line_and_auto_skips_them():
    from engine.models import MLP, ResNetCifar

    with pytest.raises(ConfigError, match=r"^repair: 'mix' is not valid; ResNetCifar has BatchNorm.*conv2/4/6\)$"):
        G.repair_layers(ResNetCifar(3, 1, 10, 0.25))
    with pytest.raises(ConfigError, match=r"^repair: 'mean' is not valid; ResNetCifar has BatchNorm"):
        G.resolve_repair("mean", ResNetCifar(3, 1, 10, 0.25))
    assert G.resolve_repair("auto", ResNetCifar(3, 1, 10, 0.25)) == "none"  # BatchNorm: statistics recomputed instead
    assert G.resolve_repair("auto", MLP(4, [3], 2)) == "mix" and G.resolve_repair("mean", MLP(4, [3], 2)) == "mean"
    with pytest.raises(ConfigError, match="Sequential is not such a chain") as e:
        G.repair_layers(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)))
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- a generation of a stored zoo
def test_a_generation_is_measured_stored_and_found_again(runs):
    runs_dir, dense, _, _ = runs
    zoo = Z.load_zoo(runs_dir, dense)
    events = []
    opts = G.GenerateOptions(pca=3, prune_density=0.5, **FAST)
    report = G.generate(runs_dir, dense, opts, on_event=events.append)
    assert report["canonicalise"] == "rebasin" and report["coordinates"] == 3 and report["members"] == 5
    assert report["align_moved"] and report["options"]["align_rounds"] == 20  # MergeMany ran after the reference
    a = report["accuracy"]
    assert a["zoo"]["median"] == pytest.approx(sorted(m["test_accuracy"] for m in zoo.members)[2], abs=1e-6)
    assert len(report["accuracies"]["generated"]) == 4 and 0 <= a["generated"]["median"] <= 1
    assert {"gaussian", "zoo_mean", "gaussian_uncanonicalised", "zoo_mean_uncanonicalised"} <= set(a)
    assert 0 <= report["diversity"]["generated"] <= 1 and len(report["novelty"]["generated_nn"]) == 4
    assert report["pruned"]["density"] == pytest.approx(0.5, abs=0.01)
    assert len(report["map"]["zoo"]) == 5 and len(report["map"]["generated"]) == 4
    assert report["seconds"]["train"] > 0
    done = [e for e in events if isinstance(e, engine.events.AnalysisProgress)]
    assert done[-1].done == done[-1].total and any(isinstance(e, engine.events.AnalysisReady) for e in events)
    # canonicalisation (minutes on wide zoos) reports every member it matches and every MergeMany round
    messages = [e.message for e in done]
    assert sum("matched to member 0" in m for m in messages) == 4
    assert {f"MergeMany round {r + 1}/20" for r in range(len(report["align_moved"]))} <= \
        {m.split(":")[0] for m in messages}
    # stored with the zoo: the generator, the nets (loadable into the architecture), the report
    stored, nets = G.load_generation(runs_dir, dense, report["generation"])
    assert stored == json.loads(json.dumps(report))
    assert all(v.shape[0] == 4 for v in nets.values())
    model = zoo.model()
    model.load_state_dict(member_weights(nets, 0))
    gen_dir = G.generation_dir(runs_dir, dense, report["generation"])
    assert (gen_dir / "generator.safetensors").exists()
    # asked again: the stored generation, not a new one
    mtime = (gen_dir / "report.json").stat().st_mtime
    assert G.generate(runs_dir, dense, opts)["generation"] == report["generation"]
    assert (gen_dir / "report.json").stat().st_mtime == mtime
    assert [g["generation"] for g in G.generations(runs_dir, dense)] == [report["generation"]]
    writing = gen_dir.parent / f".{report['generation']}.tmp123"  # another process's folder, not yet renamed
    writing.mkdir()
    (writing / "report.json").write_text("{}")
    assert [g["generation"] for g in G.generations(runs_dir, dense)] == [report["generation"]]
    (writing / "report.json").unlink()
    writing.rmdir()
    with pytest.raises(ConfigError, match="plain"):
        G.load_generation(runs_dir, dense, "../../" + dense)


def test_a_family_zoos_generation_places_its_nets_among_the_families(runs):
    runs_dir = runs[0]
    options = Z.ZooOptions(members=4, families=2, spawn_step=3)
    zoo = Z.train_zoo(options, Z.zoo_config(options, DENSE, runs_dir=runs_dir), runs_dir=runs_dir)["run_id"]
    report = G.generate(runs_dir, zoo, G.GenerateOptions(**FAST))
    f = report["families"]
    assert (f["families"], f["spawn_step"]) == (2, 3) and 0 <= f["inside_share"] <= 1
    assert f["radius_median"] < f["between_median"]  # siblings nearer each other than families are
    assert "2 families parting at step 3" in G.format_report(report)
    dense = G.generate(runs_dir, runs[1], G.GenerateOptions(**FAST))
    assert "families" not in dense and "families" not in G.format_report(dense)


def test_a_cooler_temperature_generates_networks_closer_together(runs):
    runs_dir, dense, _, _ = runs
    spread = {}
    for t in (1.0, 0.2):
        report = G.generate(runs_dir, dense, G.GenerateOptions(pca=4, temperature=t, **{**FAST, "samples": 8}))
        assert report["options"]["temperature"] == t
        nets = G.load_generation(runs_dir, dense, report["generation"])[1]
        spread[t] = G.flatten(nets).std(0).mean()
    assert spread[0.2] < 0.5 * spread[1.0]


def test_default_pca_is_the_zoos_whole_span_and_names_the_same_generation(runs):
    runs_dir, dense, _, _ = runs
    default = G.plan(runs_dir, dense, G.GenerateOptions(**FAST))  # plans write nothing
    assert default.options.pca == 4  # 5 members span 4 directions
    assert default.generation_id == G.plan(runs_dir, dense, G.GenerateOptions(pca=4, **FAST)).generation_id
    assert default.generation_id != G.plan(runs_dir, dense, G.GenerateOptions(pca=0, **FAST)).generation_id


def test_generated_tickets_keep_the_tickets_mask_and_density_exactly(runs):
    runs_dir, _, ticket, _ = runs
    zoo = Z.load_zoo(runs_dir, ticket)
    report = G.generate(runs_dir, ticket, G.GenerateOptions(**FAST))
    assert report["canonicalise"] == "none" and report["zoo_kind"] == "ticket"
    assert report["dims"] == sum(int(m.sum()) for m in zoo.mask.values()) + sum(
        v[0].numel() for k, v in zoo.weights.items() if k not in zoo.mask)
    _, nets = G.load_generation(runs_dir, ticket, report["generation"])
    for name, keep in zoo.mask.items():
        assert (nets[name][:, ~keep] == 0).all()
        assert (nets[name][:, keep] != 0).all()
    assert report["density"]["generated"] == pytest.approx(M.density(zoo.mask))
    assert report["density"]["pruned_entries_zero"] is True


def test_repair_is_applied_to_the_generated_nets_and_baselines_alike_and_reported(runs, capsys):
    runs_dir, dense, ticket, _ = runs
    plain = G.generate(runs_dir, dense, G.GenerateOptions(pca=3, repair="none", **FAST))
    assert main(["generate", dense, "--runs-dir", str(runs_dir), "--quiet", "--json", "--repair", "mix", "--pca", "3",
                 *[f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()]]) == 0
    fixed = json.loads(capsys.readouterr().out)
    assert fixed["options"]["repair"] == "mix" and fixed["generation"] != plain["generation"]
    # the default, auto, is mix for an MLP: the same generation
    assert G.plan(runs_dir, dense, G.GenerateOptions(pca=3, **FAST)).generation_id == fixed["generation"]
    assert plain["repair"] == {"applied": False} and fixed["repair"]["applied"] is True
    assert fixed["repair"]["layers"] == ["hidden.0"] and fixed["repair"]["examples"] == 1024
    # the same flow and samples, then repaired: the nets before repair are the plain generation's
    assert fixed["repair"]["generated_nn_before"] == pytest.approx(plain["novelty"]["generated_nn"], rel=1e-4)
    a, b = G.load_generation(runs_dir, dense, plain["generation"])[1], G.load_generation(
        runs_dir, dense, fixed["generation"])[1]
    assert not torch.equal(a["hidden.0.weight"], b["hidden.0.weight"]) and torch.equal(a["out.weight"], b["out.weight"])
    assert {"gaussian", "zoo_mean", "gaussian_uncanonicalised", "zoo_mean_uncanonicalised"} <= set(fixed["accuracy"])
    assert "REPAIR         applied to the generated nets and both baselines (targets: mix" in G.format_report(fixed)
    assert "REPAIR         not applied" in G.format_report(plain)
    # the zoo's mean mixes every member alike: the same targets, so the same net, with mix and with mean
    mean = G.generate(runs_dir, dense, G.GenerateOptions(pca=3, repair="mean", **FAST))
    assert mean["accuracy"]["zoo_mean"] == fixed["accuracy"]["zoo_mean"]
    # a ticket zoo: repaired nets keep the mask exactly
    zoo = Z.load_zoo(runs_dir, ticket)
    report = G.generate(runs_dir, ticket, G.GenerateOptions(repair="mix", **FAST))
    assert report["repair"]["applied"] and report["density"]["pruned_entries_zero"] is True
    nets = G.load_generation(runs_dir, ticket, report["generation"])[1]
    for name, keep in zoo.mask.items():
        assert (nets[name][:, ~keep] == 0).all()


def test_a_cancelled_generation_stores_nothing(runs):
    runs_dir, dense, _, _ = runs
    cancel = threading.Event()

    def on_event(e):
        if isinstance(e, engine.events.AnalysisProgress) and e.done > 10:
            cancel.set()

    opts = G.GenerateOptions(seed=7, **{**FAST, "steps": 200})
    before = sorted(p.name for p in (Z.load_zoo(runs_dir, dense).dir / "generations").iterdir()) \
        if (Z.load_zoo(runs_dir, dense).dir / "generations").exists() else []
    with pytest.raises(RunCancelled):
        G.generate(runs_dir, dense, opts, on_event=on_event, cancel=cancel)
    folder = Z.load_zoo(runs_dir, dense).dir / "generations"
    after = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert after == before


def test_a_batchnorm_zoo_generates_and_says_its_statistics_were_recomputed(runs_dir):
    """resnet20 (BatchNorm): no REPAIR (auto), every net's statistics recomputed, zoo members too, so the report's
    zoo accuracies are not the stored ones `lottery show` prints: the report says so."""
    options = Z.ZooOptions(members=2)
    cfg = {"model.model": "resnet20", "model.width": 0.25, "train.epochs": 1, "train.batch_size": 200,
           "device": "cpu"}
    zoo_id = Z.train_zoo(options, Z.zoo_config(options, cfg, runs_dir=runs_dir), runs_dir=runs_dir)["run_id"]
    report = G.generate(runs_dir, zoo_id, G.GenerateOptions(**{**FAST, "samples": 2}))
    assert report["options"]["repair"] == "none" and report["batchnorm_recomputed"] is True
    assert "statistics recomputed on training data for every net above, zoo members too" in G.format_report(report)


def test_asking_for_what_auto_chooses_is_the_same_generation(runs):
    """--canonicalise rebasin on a dense zoo (none on a ticket zoo) is what auto does: the stored generation is
    found again rather than computed and listed a second time (as --pca members - 1 and --repair mix are)."""
    runs_dir, dense, ticket, _ = runs
    for zoo_id, chosen in ((dense, "rebasin"), (ticket, "none")):
        auto = G.plan(runs_dir, zoo_id, G.GenerateOptions(**FAST))
        asked = G.plan(runs_dir, zoo_id, G.GenerateOptions(canonicalise=chosen, **FAST))
        assert auto.canonicalise == asked.canonicalise == chosen
        assert asked.generation_id == auto.generation_id
    assert G.plan(runs_dir, dense, G.GenerateOptions(canonicalise="none", **FAST)).generation_id != \
        G.plan(runs_dir, dense, G.GenerateOptions(**FAST)).generation_id
    # without canonicalisation the re-matching rounds and the reference member change nothing
    assert G.plan(runs_dir, dense, G.GenerateOptions(canonicalise="none", align_rounds=3, reference=1,
                                                     **FAST)).generation_id == \
        G.plan(runs_dir, dense, G.GenerateOptions(canonicalise="none", **FAST)).generation_id


def test_bad_generations_are_one_line_errors_and_store_nothing(runs, capsys, tmp_path):
    runs_dir, dense, ticket, ticket_run = runs
    # a zoo whose stored weights are not of the architecture its config names
    import shutil
    other = runs_dir / "zoo-mlp-digits-otherarch"
    shutil.copytree(runs_dir / dense, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["config"]["model"]["hidden"] = [7]
    (other / "config.json").write_text(json.dumps(cfg))
    shutil.rmtree(other / "generations", ignore_errors=True)

    def listing():
        return sorted(str(p.relative_to(runs_dir)) for p in runs_dir.rglob("*"))

    before = listing()
    cases = [([dense, "--pca", "5"], "--pca: 5 is not valid; must be 0 (no PCA) or 1..4"),
             ([dense, "--pca", "-1"], "--pca: -1"),
             ([dense, "--samples", "0"], "--samples: 0"),
             ([dense, "--temperature", "0"], "--temperature: 0"),
             ([dense, "--ema", "1"], "--ema: 1"),
             ([dense, "--reference", "9"], "--reference: 9"),
             ([dense, "--canonicalise", "sideways"], "--canonicalise: 'sideways'"),
             ([dense, "--repair", "always"], "--repair: 'always'"),
             ([ticket, "--canonicalise", "rebasin"], "share one mask"),
             ([ticket, "--prune-density", "0.5"], "applies to dense zoos"),
             ([ticket_run], "is a ticket run, not a zoo"),
             (["zoo-nope"], "no such zoo"),
             (["zoo-mlp-digits-otherarch"], "do not fit the architecture")]
    for flags, message in cases:
        code = main(["generate", "--runs-dir", str(runs_dir), "--quiet", "--steps", "2", *flags])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (flags, err)
    assert listing() == before


def test_a_damaged_generation_report_spoils_neither_the_zoo_nor_the_others(runs, capsys):
    """One generation's report.json damaged on disk made `lottery show ZOO_ID`, every later `lottery generate` (after
    its work) and the Weight space tab fail on it; it is now listed as unreadable, and asked for again it is
    computed again and replaces the damaged folder."""
    from explorer import weight_space as W

    runs_dir, dense, _, _ = runs
    opts = G.GenerateOptions(seed=11, **FAST)
    gen = G.generate(runs_dir, dense, opts)["generation"]
    (G.generation_dir(runs_dir, dense, gen) / "report.json").write_text("{")
    assert gen not in [r["generation"] for r in G.generations(runs_dir, dense)]
    assert main(["show", dense, "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert f"  {gen}  unreadable: " in out and "test accuracy: median" in out
    W.WeightSpacePanel(runs_dir).show(dense)
    again = G.generate(runs_dir, dense, opts)
    assert again["generation"] == gen and G.load_generation(runs_dir, dense, gen)[0] == json.loads(json.dumps(again))


def test_a_generation_missing_its_networks_is_computed_again_not_returned(runs, capsys):
    """A generation whose weights.safetensors was deleted was listed as fine by `lottery show ZOO_ID`, returned
    as stored by `lottery generate` with the same settings, and load_generation raised a bare FileNotFoundError;
    it is now listed as unreadable naming the file, load_generation says the same, and generate computes it."""
    from engine.store import StoreDamaged

    runs_dir, dense, _, _ = runs
    opts = G.GenerateOptions(seed=12, **FAST)
    gen = G.generate(runs_dir, dense, opts)["generation"]
    weights = G.generation_dir(runs_dir, dense, gen) / "weights.safetensors"
    weights.unlink()
    assert gen not in [r["generation"] for r in G.generations(runs_dir, dense)]
    assert main(["show", dense, "--runs-dir", str(runs_dir)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if gen in x)
    assert "unreadable" in line and "weights.safetensors is missing" in line and "lottery generate" in line, line
    with pytest.raises(StoreDamaged, match="weights.safetensors is missing"):
        G.load_generation(runs_dir, dense, gen)
    again = G.generate(runs_dir, dense, opts)
    assert again["generation"] == gen and weights.exists()
    assert G.load_generation(runs_dir, dense, gen)[1]


def test_generate_command_prints_the_comparison(runs, capsys):
    runs_dir, dense, _, _ = runs
    code = main(["generate", dense, "--runs-dir", str(runs_dir), "--quiet", "--canonicalise", "none",
                 "--steps", "20", "--samples", "3", "--ode-steps", "3", "--hidden", "16"])
    out = capsys.readouterr().out
    assert code == 0
    assert "canonicalise none" in out and "generated  median" in out and "zoo mean as one net" in out
    assert "novelty" in out and "diversity" in out and "seconds" in out
    code = main(["generate", dense, "--runs-dir", str(runs_dir), "--json", "--canonicalise", "none",
                 "--steps", "20", "--samples", "3", "--ode-steps", "3", "--hidden", "16"])
    assert code == 0 and json.loads(capsys.readouterr().out)["canonicalise"] == "none"


def test_show_lists_the_generations_stored_with_a_zoo(runs, capsys):
    runs_dir, dense, _, _ = runs
    report = G.generate(runs_dir, dense, G.GenerateOptions(pca=3, prune_density=0.5, **FAST))  # stored already
    stored = [g["generation"] for g in G.generations(runs_dir, dense)]  # (other tests may have stored more)
    assert main(["show", dense, "--runs-dir", str(runs_dir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["generations"]
    assert [r["generation"] for r in rows] == stored
    gen, zoo = report["accuracy"]["generated"]["median"], report["accuracy"]["zoo"]["median"]
    assert rows[stored.index(report["generation"])] == {
        "generation": report["generation"], "canonicalise": "rebasin", "pca": 3, "samples": 4, "steps": 30,
        "seed": 0, "generated_median": gen, "zoo_median": zoo}
    assert main(["show", dense, "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert f"generations: {len(stored)}\n" in out
    assert (f"  {report['generation']}  canonicalise rebasin, PCA 3, 4 samples, 30 flow steps, seed 0: generated "
            f"median {100 * gen:.2f}% vs zoo median {100 * zoo:.2f}%") in out
    # generations that differ only in their flow seed are told apart
    other = G.generate(runs_dir, dense, G.GenerateOptions(pca=3, prune_density=0.5, **{**FAST, "seed": 1}))
    assert main(["show", dense, "--runs-dir", str(runs_dir)]) == 0
    lines = {line.split()[0]: line.split(maxsplit=1)[1].split(":")[0] for line in capsys.readouterr().out.splitlines()
             if line.startswith("  gen-")}
    assert lines[report["generation"]] != lines[other["generation"]]
    assert f"{report['generation']}: canonicalise rebasin, PCA 3, 30 steps, seed 0 -> generated" in \
        G.format_report(other, G.generations(runs_dir, dense))  # `lottery generate` lists the others too
    summary = json.loads((runs_dir / dense / "summary.json").read_text())
    assert "generations: none yet" in Z.format_zoo({**summary, "generations": []})
    assert "generations" not in Z.format_zoo(summary)  # `lottery zoo` prints the zoo alone


# ---------------------------------------------------------------- the explorer's Weight space tab (no browser)
def test_weight_space_panel_generates_on_a_worker_and_draws_what_was_stored(runs):
    import holoviews as hv

    from conftest import wait_until
    from explorer import weight_space as W

    runs_dir, dense, _, _ = runs
    panel = W.WeightSpacePanel(runs_dir)
    assert dense in panel.zoo.options
    panel.show(dense)
    panel.gen_form["pca"].value = "9"  # (a text box: empty is members - 1) more components than a 5-member zoo has: refused at once, no job
    panel.generate()
    assert panel.job is None and "pca: 9 is not valid" in panel.status.object
    for name, value in {"pca": "2", "steps": 15, "samples": 3, "ode_steps": 3, "hidden": 16, "seed": 3}.items():
        panel.gen_form[name].value = value
    panel.generate()
    assert panel.job is not None and not panel.cancel.disabled
    wait_until(panel.poll, what="generation finished")
    assert "generation **gen-" in panel.status.object
    report = panel._reports[panel.generation.value]
    assert report["options"]["seed"] == 3 and len(report["accuracies"]["generated"]) == 3
    for plot in (W.accuracy_plot(report), W.map_plot(report)):
        assert isinstance(plot, hv.Overlay) and hv.render(plot) is not None
    # the map's legend sits below the plot: inside it, it hid the members drawn in its corner
    from bokeh.models import Legend
    assert any(isinstance(r, Legend) for r in hv.render(W.map_plot(report)).below)
    assert "generated  median" in panel.table.object
    # barriers naive vs matched, stored with the zoo and drawn
    panel.barriers()
    wait_until(panel.poll, what="barriers finished")
    assert "naive" in panel.status.object
    assert hv.render(panel.panes["barriers"].object) is not None
    # Cancel: a long generation stops, nothing of it is stored
    panel.gen_form["steps"].value, panel.gen_form["seed"].value = 100_000, 4
    before = set(panel._reports)
    panel.generate()
    panel.cancel.clicks += 1
    wait_until(lambda: panel.poll() or panel.job is None, what="cancelled")
    assert "stopped" in panel.status.object and set(panel._reports) == before


def test_weight_space_panel_shows_a_damaged_barrier_file_instead_of_failing(runs_dir):
    """zoo-barrier.json damaged on disk: the tab drew nothing for the zoo (StoreDamaged from the watcher); it now
    draws the rest and says what is wrong in the barrier plot, and Barriers computes them again."""
    from conftest import wait_until
    from explorer import weight_space as W

    options = Z.ZooOptions(members=2)
    zoo_id = Z.train_zoo(options, Z.zoo_config(options, {**DENSE, "model.hidden": (4,), "train.epochs": 1},
                                               runs_dir=runs_dir), runs_dir=runs_dir)["run_id"]
    Z.zoo_barriers(runs_dir, zoo_id, pairs=1, points=2)
    (runs_dir / zoo_id / "analyses" / "zoo-barrier.json").write_text("{")
    panel = W.WeightSpacePanel(runs_dir)
    panel.show(zoo_id)
    assert "is damaged" in str(panel.panes["barriers"].object.get(0).text)
    panel.barriers()
    wait_until(panel.poll, what="barriers computed again")
    assert "naive" in panel.status.object


def test_weight_space_panel_trains_a_zoo(runs_dir):
    from conftest import wait_until
    from explorer import weight_space as W

    panel = W.WeightSpacePanel(runs_dir)
    assert panel.zoo.options == []
    values = {"model.hidden": "8", "train.epochs": 1}
    for path, value in values.items():
        panel.zoo_settings[path].value = value
    panel.zoo_form["members"].value = 2
    panel.train_zoo()
    wait_until(panel.poll, what="zoo trained")
    assert "completed" in panel.status.object and len(panel.zoo.options) == 1
    assert W.accuracy_plot(None) is not None and W.barrier_plot(None) is not None


def test_weight_space_panel_ticket_zoo_trains_with_the_ticket_runs_own_settings(runs):
    """A ticket zoo retrains the ticket as its run trained it (as `lottery zoo --ticket` does): the form's
    starting training values (the dense science zoo's SGD, 20 epochs) must not replace the run's; a value the
    user changed does (as a flag does on the command line)."""
    from conftest import wait_until
    from explorer import weight_space as W

    runs_dir, _, _, ticket_run = runs
    stored = engine.RunStore(runs_dir, ticket_run).config()["train"]
    panel = W.WeightSpacePanel(runs_dir)
    panel.zoo_form["ticket"].value = ticket_run
    panel.zoo_form["members"].value = 2
    panel.zoo_settings["seed"].value = 7  # changed by the user: applies
    panel.train_zoo()
    assert f"ticket zoo of {ticket_run}, trained as that run was" in panel.status.object
    assert "changed here: seed" in panel.status.object
    result = wait_until(lambda: panel.poll() and panel.job is None, what="ticket zoo trained")
    assert result and "completed" in panel.status.object
    zoo_id = panel.zoo.value
    config = Z.load_zoo(runs_dir, zoo_id).config
    assert config.to_dict()["train"] == stored and config.seed == 7


def test_the_app_has_a_weight_space_tab(runs):
    from explorer.app import ExplorerApp
    from explorer.weight_space import WeightSpacePanel

    runs_dir, dense, _, _ = runs
    app = ExplorerApp(runs_dir=str(runs_dir))
    view = app.open("Weight space")
    assert isinstance(view, WeightSpacePanel) and dense in view.zoo.options
    app.tick()  # polls the tab (nothing running)
    app.stop()


def test_weight_space_panel_keeps_saying_busy_while_a_job_runs(runs_dir, monkeypatch):
    """Asking for a ticket zoo while another job runs: the refusal stayed on screen for a moment only, replaced by
    "zoo running: a ticket zoo of ..." (nothing was running for it)."""
    import engine.zoo as Z
    from explorer import weight_space as W

    panel = W.WeightSpacePanel(runs_dir)
    monkeypatch.setattr(Z, "zoo_config", lambda options, values, runs_dir: None)
    panel.zoo_form.options = lambda: Z.ZooOptions(ticket="imp-lenet300-digits-abc")
    panel.job = object()  # a generation is running
    panel.train_zoo()
    assert panel.status.object == "Busy: cancel the running job first."


def test_a_refusal_made_while_a_job_runs_stays_under_its_progress_line(runs_dir, monkeypatch):
    """"Busy: cancel the running job first." was replaced by the job's next progress line within a second."""
    import engine.zoo as Z
    from engine.events import AnalysisProgress
    from explorer import weight_space as W

    class Running:  # a generation under way: a progress line at every poll
        name = "generate"

        def poll(self):
            return [AnalysisProgress(run_id="zoo-x", analysis="generate", done=1, total=4,
                                     message="flow step 100 of 400")], False

    panel = W.WeightSpacePanel(runs_dir)
    monkeypatch.setattr(Z, "zoo_config", lambda options, values, runs_dir: None)
    panel.zoo_form.options = lambda: Z.ZooOptions()
    panel.job = Running()
    panel.train_zoo()
    panel.poll()
    status = panel.status.object
    assert "flow step 100 of 400" in status and "Busy: cancel the running job first." in status


def test_plan_errors_name_the_field_the_app_shows_and_the_cli_its_flag(runs):
    """The app's Generate said "--pca: 9 is not valid" next to a box labelled pca; the CLI still says --pca."""
    runs_dir, dense, ticket, _ = runs
    for options, field in [(G.GenerateOptions(pca=9), "pca"), (G.GenerateOptions(reference=9), "reference"),
                           (G.GenerateOptions(prune_density=0.5), "prune_density")]:
        zoo = ticket if field == "prune_density" else dense
        with pytest.raises(ConfigError, match=f"^{field}: "):
            G.plan(runs_dir, zoo, options)
