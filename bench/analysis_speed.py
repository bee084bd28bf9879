"""How fast are the analyses? (a script, not a test)

(a) Neural persistence. `engine.analysis.persistence.layer_persistence` builds a gudhi SimplexTree of
    the layer's complete bipartite graph and computes its 0-dimensional persistence. Its finite pairs are
    exactly the edges of a minimum spanning tree with edge weights 1 - |w|/W, so an independent path is
    scipy.sparse.csgraph.minimum_spanning_tree on the same graph (weights shifted by +1: SciPy reads a
    stored 0 as "no edge", and an edge at |w| = W weighs exactly 0). Both run in this process on the
    same weights; the sorted persistences must agree to 1e-9. Timed: one 784x300 layer and a whole
    LeNet-300-100 level (784-300-100-10 weights, kaiming-normal random init, and the same net ~80%
    pruned by layerwise magnitude); median and minimum of --repeats interleaved rounds after a warm-up
    (interleaved so the load of a shared machine hits both paths alike).
    Target: NP of a whole lenet300 level (gudhi path) under 0.3 s.

(b) Error barrier. A 31-point `engine.analysis.interpolate` + `error_barrier` between two trained
    lenet300 nets on digits (same init, two data orders, as an instability pair), against 31 calls of
    `engine.trainer.evaluate` alone on the same split: what fraction of a barrier is evaluation?
    Target: a barrier dominated by evaluation, not by Python overhead (blending, load_state_dict).

    python bench/analysis_speed.py [--repeats 15] [--threads 1] [--epochs 30] [--models lenet300,conv2]
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import minimum_spanning_tree

from engine import masks as M
from engine import models, trainer
from engine.analysis import error_barrier, interpolate
from engine.analysis.interpolation import _blend
from engine.analysis.persistence import edge_weights, layer_persistence, network_persistence
from engine.config import DataConfig, ModelConfig, TrainConfig
from engine.data import load

NP_TARGET_S = 0.3
TOL = 1e-9


# ---------------------------------------------------------------- (a) neural persistence
def scipy_layer_persistence(weight_matrix, global_max: float) -> dict:
    """The same quantities as `layer_persistence`, from SciPy's minimum spanning tree.

    Nodes 0..n_in-1 are the inputs, n_in..n-1 the outputs; every (input, output) pair is an edge of
    weight (1 - |w|/W) + 1, stored once (SciPy treats the matrix as an undirected graph)."""
    w = edge_weights(torch.as_tensor(weight_matrix))  # (n_out, n_in) |w|, float64, conv kernels reduced
    n_out, n_in = w.shape
    n = n_in + n_out
    # CSR by hand: input row i holds the edges to every output, columns n_in..n-1; output rows are empty.
    indptr = np.concatenate([np.arange(0, n_in * n_out + 1, n_out), np.full(n_out, n_in * n_out)])
    indices = np.tile(np.arange(n_in, n, dtype=np.int32), n_in)
    data = 2.0 - np.ascontiguousarray(w.T).ravel() / global_max
    mst = minimum_spanning_tree(csr_matrix((data, indices, indptr), shape=(n, n)))
    deaths = mst.data - 1.0  # births are all 0: persistence = death
    if deaths.size != n - 1:
        raise RuntimeError(f"spanning tree has {deaths.size} edges, expected {n - 1}")
    value = math.sqrt(float(np.sum(deaths ** 2)) + 1.0)  # + the essential class, persistence 1
    return {"persistence": deaths, "np": value, "normalised": value / math.sqrt(n - 1)}


def scipy_network_persistence(layers: dict[str, torch.Tensor]) -> dict:
    edges = {n: edge_weights(w) for n, w in layers.items()}
    global_max = max(float(e.max(initial=0.0)) for e in edges.values())
    out = {n: scipy_layer_persistence(e, global_max) for n, e in edges.items()}
    return {"layers": out, "network": float(np.mean([r["normalised"] for r in out.values()]))}


def max_difference(gudhi_res: dict, scipy_res: dict) -> float:
    """Largest |difference| between sorted persistences and between the NP values of one layer."""
    pairs = gudhi_res["pairs"]
    a = np.sort(pairs[:, 1] - pairs[:, 0])
    b = np.sort(scipy_res["persistence"])
    if a.shape != b.shape:
        return math.inf
    return max(float(np.max(np.abs(a - b))), abs(gudhi_res["np"] - scipy_res["np"]),
               abs(gudhi_res["normalised"] - scipy_res["normalised"]))


def interleaved(fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """{name: (median, min) seconds}, timing every fn once per round, after a warm-up round."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(ts), min(ts)) for name, ts in times.items()}


def lenet784(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(dense, ~80%-pruned) prunable weights of a 784-300-100-10 LeNet at kaiming-normal init."""
    net = models.initialise(models.MLP(784, [300, 100], 10), "kaiming_normal", torch.Generator().manual_seed(seed))
    dense = M.ones(net)
    # 20% of each hidden layer kept; output layer where IMP would leave it at that density (0.9 ** 7.2).
    mask = M.prune_to_density(M.magnitude_scores(net, dense), dense, 0.2, 0.9 ** (math.log(0.2) / math.log(0.8)),
                              "layerwise", M.output_layer(net))
    params = dict(net.named_parameters())
    weights = {n: params[n].detach().clone() for n in dense}
    pruned = {n: weights[n] * mask[n] for n in dense}
    return weights, pruned


def bench_persistence(repeats: int) -> list[dict]:
    dense, pruned = lenet784()
    rows = []
    for label, layers in (("random init", dense), ("80% pruned", pruned)):
        density = sum(int((w != 0).sum()) for w in layers.values()) / sum(w.numel() for w in layers.values())
        global_max = max(float(w.abs().max()) for w in layers.values())
        first = layers["hidden.0.weight"]  # (300, 784)

        # correctness first: every layer, both paths
        g_net = network_persistence(layers)
        s_net = scipy_network_persistence(layers)
        diff = max(max_difference(g_net["layers"][n], s_net["layers"][n]) for n in layers)
        diff = max(diff, abs(g_net["network"] - s_net["network"]))

        t = interleaved({"g1": lambda: layer_persistence(first, global_max),
                         "s1": lambda: scipy_layer_persistence(first, global_max),
                         "g_all": lambda: network_persistence(layers),
                         "s_all": lambda: scipy_network_persistence(layers)}, repeats)
        rows.append({"label": label, "density": density, "diff": diff, "np_net": g_net["network"],
                     "np_first": g_net["layers"]["hidden.0.weight"]["normalised"],
                     "layer": (t["g1"], t["s1"]), "level": (t["g_all"], t["s_all"])})
    return rows


def print_persistence(rows: list[dict]) -> None:
    print("\n(a) neural persistence: gudhi (engine) vs SciPy minimum spanning tree, seconds (median / min)")
    print(f"{'weights':<13}{'density':>8}{'what':>17}{'gudhi med':>11}{'scipy med':>11}{'gudhi min':>11}"
          f"{'scipy min':>11}{'gudhi/scipy':>13}{'max |diff|':>12}")
    for r in rows:
        for what, (g, s) in (("784x300 layer", r["layer"]), ("lenet300 level", r["level"])):
            print(f"{r['label']:<13}{r['density']:>8.3f}{what:>17}{g[0]:>11.4f}{s[0]:>11.4f}{g[1]:>11.4f}"
                  f"{s[1]:>11.4f}{g[0] / s[0]:>13.1f}{r['diff']:>12.2e}")
    print(f"\n{'weights':<13}{'network NP':>12}{'layer0 norm NP':>16}  agree to {TOL:g}   lenet300 level NP "
          f"(gudhi) < {NP_TARGET_S} s")
    for r in rows:
        ok = "yes" if r["diff"] <= TOL else "NO"
        fast = "yes" if r["level"][0][0] < NP_TARGET_S else "NO"
        print(f"{r['label']:<13}{r['np_net']:>12.6f}{r['np_first']:>16.6f}  {ok:<15}   {fast} "
              f"(median {r['level'][0][0]:.3f} s)")


# ---------------------------------------------------------------- (b) barrier
def bench_barrier(model_cfg: ModelConfig, data, epochs: int, points: int, repeats: int) -> dict:
    cfg = TrainConfig(epochs=epochs)

    def make_model():
        return models.build(model_cfg, data.input_shape, data.num_classes, seed=0)

    ends = []
    t0 = time.perf_counter()
    for order in (1, 2):  # one init, two data orders: an instability pair at k = 0
        m = make_model()
        r = trainer.train(m, data, cfg, None, seed=order)
        ends.append(({k: v.detach().clone() for k, v in m.state_dict().items()}, r.final["test_accuracy"]))
    train_s = time.perf_counter() - t0
    (a, acc_a), (b, acc_b) = ends
    net = make_model()
    net.load_state_dict(a)

    barrier_value = {}

    def barrier():
        curve = interpolate(make_model, a, b, data.test, points)
        barrier_value["error"] = error_barrier(curve)

    def evals():
        for _ in range(points):
            trainer.evaluate(net, data.test)

    alphas = [i / (points - 1) for i in range(points)]

    def blends():  # the per-point Python work of interpolate besides evaluation
        for alpha in alphas:
            net.load_state_dict(_blend(a, b, alpha, None))

    def setup():  # interpolate's one-off work: a fresh model from the factory
        make_model()

    # Interleaved (barrier, evaluations, blends, build in every round), so the load of a shared machine
    # hits all four alike; median and minimum over the rounds.
    t = interleaved({"bar": barrier, "eval": evals, "blend": blends, "setup": setup}, repeats)
    t_bar, t_eval, t_blend, t_setup = (t[k] for k in ("bar", "eval", "blend", "setup"))
    return {"model": f"{model_cfg.model}" + (f" w{model_cfg.width:g}" if model_cfg.width != 1 else ""),
            "params": sum(v.numel() for v in a.values()), "test_n": len(data.test), "train_s": train_s,
            "acc": (acc_a, acc_b), "barrier": barrier_value["error"], "t_bar": t_bar, "t_eval": t_eval,
            "t_blend": t_blend, "t_setup": t_setup}


def print_barrier(rows: list[dict], points: int) -> None:
    print(f"\n(b) {points}-point barrier (interpolate + error_barrier) on the digits test split, seconds; "
          "'other' = barrier - the three parts")
    print(f"{'model':<12}{'stat':>5}{'barrier':>9}{'eval x31':>10}{'eval share':>12}{'blend+load x31':>16}"
          f"{'model build':>13}{'other':>9}{'ms/point':>10}")
    for r in rows:
        for i, stat in enumerate(("med", "min")):
            bar, ev, bl, su = (r[k][i] for k in ("t_bar", "t_eval", "t_blend", "t_setup"))
            print(f"{r['model'] if i == 0 else '':<12}{stat:>5}{bar:>9.4f}{ev:>10.4f}{ev / bar:>12.1%}{bl:>16.4f}"
                  f"{su:>13.4f}{bar - ev - bl - su:>9.4f}{1e3 * bar / points:>10.2f}")
    for r in rows:
        med, low = (r["t_eval"][i] / r["t_bar"][i] for i in (0, 1))
        # the minima are the least disturbed by other processes on a shared machine: judge by them
        verdict = "evaluation-dominated" if low >= 0.5 else "overhead-dominated"
        print(f"  {r['model']} ({r['params']} params, {r['test_n']} test examples): endpoint test acc "
              f"{r['acc'][0]:.4f} / {r['acc'][1]:.4f}, error barrier {r['barrier']:.4f}; {verdict}: evaluation "
              f"is {low:.0%} of a barrier by minima ({med:.0%} by medians); training the pair took "
              f"{r['train_s']:.1f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: leave torch's default)")
    ap.add_argument("--epochs", type=int, default=30, help="training epochs of the two barrier endpoints")
    ap.add_argument("--points", type=int, default=31)
    ap.add_argument("--models", default="lenet300,conv2", help="barrier models (conv2 at width 0.5)")
    ap.add_argument("--skip", choices=["persistence", "barrier"], help="leave one part out")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import gudhi
    import scipy
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), gudhi {gudhi.__version__}, "
          f"scipy {scipy.__version__}, {args.repeats} interleaved rounds after a warm-up")

    if args.skip != "persistence":
        print_persistence(bench_persistence(args.repeats))
    if args.skip != "barrier":
        data = load(DataConfig("digits"))
        cfgs = {"lenet300": ModelConfig("lenet300"), "conv2": ModelConfig("conv2", width=0.5)}
        rows = [bench_barrier(cfgs[m], data, args.epochs, args.points, args.repeats) for m in args.models.split(",")]
        print_barrier(rows, args.points)


if __name__ == "__main__":
    main()
