"""GPU check of the latency probes: does 2:4 semi-structured sparsity beat dense where the hardware has it?

    python bench/gpu_probe.py            # on a CUDA machine (compute capability >= 8.0 for 2:4): < 3 minutes
    python bench/gpu_probe.py --quick    # fewer cases

Cases (engine.probe.probe_layer: dense, masked, CSR, channel-pruned and 2:4 rows, median of
torch.utils.benchmark): the PyTorch semi-structured tutorial's nn.Linear(10240, 3072) in float16 at batch
3072 (A100: dense 0.870 ms, 2:4 0.630 ms, 1.38x), then 4096x4096 at batch 64, 256 and 3072 in float16,
bfloat16 and float32. It also checks that the tutorial layer's 2:4 output equals the masked dense one, and
prints the 2:4 speedups against the target (>= 1.3x dense). Without CUDA it says so and runs the CPU rows
(1024x1024, float32), which is how this script is tested on a CPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

# The GPU machine gets a bare checkout (the project not pip-installed): import the engine from the repo.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine import probe  # noqa: E402
from engine.structured import keep_nm  # noqa: E402

TARGET = 1.3  # 2:4 speedup over dense the tutorial's case should reach


def cases(cuda: bool, quick: bool) -> list[dict]:
    if not cuda:
        return [dict(layer=(1024, 1024), batches=(1, 64, 256), dtypes=("float32",), sparsities=(0.5, 0.9))]
    tutorial = dict(layer=(10240, 3072), batches=(3072,), dtypes=("float16",), sparsities=(0.5,))
    if quick:
        return [tutorial]
    return [tutorial, dict(layer=(4096, 4096), batches=(64, 256, 3072), dtypes=("float16", "bfloat16", "float32"),
                           sparsities=(0.5, 0.9))]


@torch.no_grad()
def tutorial_check(device) -> str:
    """The tutorial's correctness check: 2:4 output vs masked dense output of Linear(10240, 3072), fp16."""
    model = torch.nn.Sequential(torch.nn.Linear(10240, 3072)).requires_grad_(False)
    weight = model[0].weight
    mask = {"0.weight": keep_nm(weight.abs(), torch.ones_like(weight, dtype=torch.bool), 2, 4)}
    example = torch.zeros(1, 10240)
    x = torch.rand(3072, 10240, device=device).half()
    dense = probe.masked_variant(model, mask, example).build(torch.float16, device)
    try:
        sparse = probe.semi_structured_variant(model, mask, example).build(torch.float16, device)
        diff = (dense(x) - sparse(x)).abs().max().item()
    except Exception as e:  # a failing 2:4 kernel must not lose the tables printed before
        return f"2:4 correctness: not checked ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return f"2:4 correctness: max |2:4 - masked dense| = {diff:.3g} (fp16; tutorial: allclose at rtol 1e-3)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the tutorial's case")
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds of timing per row")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    print(f"torch {torch.__version__}; {probe.describe(device, torch.get_num_threads())}")
    if not cuda:
        print("no CUDA device here: 2:4 semi-structured kernels need CUDA with compute capability >= 8.0; "
              "running the CPU rows instead")
    t0 = time.perf_counter()
    semi = []
    for case in cases(cuda, args.quick):
        result = probe.probe_layer(*case["layer"], batches=case["batches"], dtypes=case["dtypes"],
                                   sparsities=case["sparsities"], device=device, min_run_time=args.min_time)
        print("\n" + probe.format_table(result), flush=True)
        semi += [(result["target"], r) for r in result["rows"] if r["pattern"] == "2:4"]
    if cuda:
        print("\n" + tutorial_check(device))
    print(f"\n2:4 vs dense (target >= {TARGET}x):")
    for target, r in semi:
        verdict = (f"{r['speedup']:.2f}x {'meets' if r['speedup'] >= TARGET else 'misses'} the target"
                   if r["available"] else f"unavailable: {r['reason']}")
        print(f"  {target} batch {r['batch']} {r['dtype']}: {verdict}")
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
