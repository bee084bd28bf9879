"""The device check of issue 16 ("CUDA everywhere"), one script, one table, under 4 minutes on a CUDA machine.

    python bench/gpu_suite.py              # on a CUDA machine: every row below
    python bench/gpu_suite.py --steps 2 --models lenet300    # a smoke run (tests/test_device.py, on a CPU)

Rows (same process, steps of batch 60 on random 1x28x28 data with 10 classes: throughput does not depend on
the values; each timing after a warm-up call, one evaluation included as a run does it):
  trainer   engine.trainer.train steps/s of lenet300 and conv4 on the CPU, on CUDA, and on CUDA with
            --amp bf16; "vs" is against the CPU row of the same model
  batched   engine.batched.train_batched of K=8 members on CUDA, member-steps/s; "vs" is against the same
            8 trainings one after another on CUDA
  2:4       bench/gpu_probe.py --quick (a subprocess): nn.Linear(10240, 3072) in float16 at batch 3072, 2:4
            semi-structured vs dense; target >= 1.3x (PyTorch's tutorial measured 1.38x on an A100)
Without CUDA it says so, prints the CPU rows it can, and exits 0: the CUDA rows are then not measured.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

# The GPU machine gets a bare checkout (the project not pip-installed): import the engine from the repo.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from engine import models, trainer  # noqa: E402
from engine.batched import Member, train_batched  # noqa: E402
from engine.config import RunConfig  # noqa: E402
from engine.data import Dataset, Split  # noqa: E402

BATCH = 60
MEMBERS = 8
SHAPE, CLASSES = (1, 28, 28), 10


def random_data(steps: int, device) -> Dataset:
    """Exactly `steps` steps of one epoch at batch 60, and small validation and test splits."""
    g = torch.Generator().manual_seed(0)

    def split(n):
        return Split(torch.randn(n, *SHAPE, generator=g).to(device),
                     torch.randint(0, CLASSES, (n,), generator=g).to(device))

    return Dataset("random", split(steps * BATCH), split(300), split(300), SHAPE, CLASSES)


def _config(model: str, amp: str = "off") -> RunConfig:
    return RunConfig().replace(**{"model.model": model, "train.epochs": 1, "train.batch_size": BATCH,
                                  "train.amp": amp, "device": "cpu"})


def _timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def trainer_rate(model: str, device, steps: int, amp: str = "off") -> float:
    """engine.trainer.train steps/s (after a warm-up call of a few steps: CUDA context, cuDNN plans)."""
    cfg = _config(model, amp)

    def once(n):
        data = random_data(n, device)
        net = models.build(cfg.model, SHAPE, CLASSES, 0).to(device)
        return lambda: trainer.train(net, data, cfg.train, None, seed=0)

    _timed(once(min(steps, 5)), device)
    return steps / _timed(once(steps), device)


def batched_rates(model: str, device, steps: int) -> tuple[float, float]:
    """(member-steps/s batched, member-steps/s one after another) for MEMBERS members on `device`."""
    cfg = _config(model)
    data = random_data(steps, device)
    net = models.build(cfg.model, SHAPE, CLASSES, 0)
    members = [Member({k: v.to(device) for k, v in models.build(cfg.model, SHAPE, CLASSES, s).state_dict().items()},
                      seed=s) for s in range(MEMBERS)]
    small = random_data(min(steps, 5), device)
    _timed(lambda: train_batched(net, small, cfg.train, members), device)  # warm-up
    batched = _timed(lambda: train_batched(net, data, cfg.train, members), device)

    def one_by_one():
        for m in members:
            alone = models.build(cfg.model, SHAPE, CLASSES, 0).to(device)
            alone.load_state_dict(m.init)
            trainer.train(alone, data, cfg.train, None, seed=m.seed)

    alone = _timed(one_by_one, device)
    return MEMBERS * steps / batched, MEMBERS * steps / alone


def probe_rows(timeout: float) -> list[str]:
    """bench/gpu_probe.py --quick in a subprocess: its 2:4 verdict and correctness lines (all of its output
    goes to stdout as it comes)."""
    try:
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_probe.py"), "--quick"], capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [f"2:4 probe: not finished within {timeout:.0f}s"]
    print(out.stdout + out.stderr, flush=True)
    lines = out.stdout.splitlines()
    verdicts = [ln.strip() for ln in lines if "meets the target" in ln or "misses the target" in ln
                or "unavailable" in ln or ln.startswith("2:4 correctness")]
    return verdicts or [f"2:4 probe: no verdict (exit {out.returncode}; output above)"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200, help="timed training steps per CUDA row (CPU rows: at most 50)")
    ap.add_argument("--models", default="lenet300,conv4", help="comma separated")
    args = ap.parse_args()
    names = args.models.split(",")
    cpu_steps = min(args.steps, 50)  # conv4 is slow on a CPU; its rate is steady well before 50 steps
    t0 = time.perf_counter()
    cuda = torch.cuda.is_available()
    cpu, gpu = torch.device("cpu"), torch.device("cuda") if cuda else None
    print(f"torch {torch.__version__}; CPU threads {torch.get_num_threads()}; "
          + (f"CUDA: {torch.cuda.get_device_name(0)}" if cuda else "no CUDA device here"), flush=True)
    rows = []  # (what, device, rate, versus)
    for model in names:
        base = trainer_rate(model, cpu, cpu_steps)
        rows.append((f"trainer {model}", "cpu", base, "1.00x CPU"))
        if cuda:
            rate = trainer_rate(model, gpu, args.steps)
            rows.append((f"trainer {model}", "cuda", rate, f"{rate / base:.2f}x CPU"))
            rate = trainer_rate(model, gpu, args.steps, amp="bf16")
            rows.append((f"trainer {model} --amp bf16", "cuda", rate, f"{rate / base:.2f}x CPU"))
        print(f"  {model} done ({time.perf_counter() - t0:.0f}s)", flush=True)
    if cuda:
        for model in names:
            together, alone = batched_rates(model, gpu, args.steps)
            rows.append((f"batched {model} K={MEMBERS} (member-steps/s)", "cuda", together,
                         f"{together / alone:.2f}x one by one"))
        probe = probe_rows(timeout=max(30.0, 230 - (time.perf_counter() - t0)))
    print(f"\nissue 16 device check (batch {BATCH}, {cpu_steps} steps per CPU row, {args.steps} per CUDA row, "
          "random 1x28x28 data):")
    print(f"{'what':44s} {'device':6s} {'steps/s':>9s}  vs")
    for what, device, rate, versus in rows:
        print(f"{what:44s} {device:6s} {rate:9.1f}  {versus}")
    if cuda:
        print("2:4 vs dense, Linear 10240->3072 fp16 (target >= 1.3x):")
        for line in probe:
            print(f"  {line}")
    else:
        print("no CUDA device here (torch.cuda.is_available() is False): the CUDA, --amp bf16, batched-on-CUDA and "
              "2:4 rows were not measured; run this script on a CUDA machine")
    print(f"total {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
