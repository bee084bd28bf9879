"""Steps/s of MiniLM fine-tuning in the engine's trainer vs a plain Hugging Face loop on the same batches.

    python bench/transformer_speed.py [--steps 30] [--repeats 3] [--model minilm] [--length 32] [--batch 16]
                                      [--dataset pydoc-topics] [--threads N]

Both fine-tune the same model (MiniLM + mean pooling + a linear head on a text task) with Adam, the same
batches in the same order; the plain loop is what one writes by hand (forward, cross-entropy, backward,
step, and one evaluation of the validation and test batch at the end). The engine runs `trainer.train` dense
and with a 50% global-magnitude mask (gradient masking), evaluating once at the end (--eval-every beyond the
last step) on the same one-batch splits. Runs alternate, `--repeats` times each; the
median ratio engine / plain (seconds per step) is printed. Target: <= 1.15. Timings on a shared machine are
noisy: run it when the machine is quiet.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from engine import masks as M
from engine import text, trainer, transformer
from engine.config import DataConfig, TrainConfig
from engine.data import Dataset, Split, load
from engine.seeding import generator


def plain_loop(model, data: Dataset, cfg: TrainConfig, steps: int, seed: int) -> float:
    """Seconds for `steps` steps of a hand-written loop over the engine's batch order."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
    x, y = data.train.x, data.train.y
    per_epoch = len(y) // cfg.batch_size
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        epoch, b = divmod(step, per_epoch)
        if b == 0:
            perm = torch.randperm(len(y), generator=generator(seed, "order", epoch))
        idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.inference_mode():  # what the engine reports at the end: validation and test accuracy
        for split in (data.val, data.test):
            (model(split.x).argmax(1) == split.y).float().mean().item()
    return time.perf_counter() - t0


def engine_loop(model, data: Dataset, cfg: TrainConfig, mask, seed: int) -> float:
    return trainer.train(model, data, cfg, mask, seed=seed).seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--dataset", default="pydoc-topics", help="a text task (pydoc-topics: 10 steps an epoch)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default; 1 is much faster "
                    "on an oversubscribed machine)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    full = load(DataConfig(dataset=args.dataset, tokenizer=text.model_tokenizer(args.model),
                           max_length=args.length))
    one = Split(full.val.x[:args.batch], full.val.y[:args.batch])
    data = Dataset(full.name, full.train, one, one, full.input_shape, full.num_classes)
    per_epoch = len(data.train) // args.batch
    if args.steps % per_epoch:
        args.steps = max(per_epoch, args.steps // per_epoch * per_epoch)  # whole epochs: the trainer's unit
    cfg = TrainConfig(epochs=args.steps // per_epoch, batch_size=args.batch, lr=5e-5, eval_every=10 ** 6)
    template = transformer.build_text_model(args.model, data.input_shape, data.num_classes)
    template.init_from_seed(torch.Generator().manual_seed(0))
    weights = {k: v.clone() for k, v in template.state_dict().items()}
    ticket = M.keep_global(M.magnitude_scores(weights, M.ones(template)), M.ones(template),
                           round(0.5 * M.total(M.ones(template))))

    def fresh():
        template.load_state_dict(weights)
        return template

    print(f"{args.model}: {sum(p.numel() for p in template.parameters()) / 1e6:.1f}M parameters, batch "
          f"{args.batch} x {args.length} tokens, {args.steps} steps per measurement, torch threads "
          f"{torch.get_num_threads()}")
    plain_loop(fresh(), data, cfg, 2, 0)  # warm-up: allocator, kernels
    times = {"plain": [], "engine dense": [], "engine 50% mask": []}
    for _ in range(args.repeats):
        times["plain"].append(plain_loop(fresh(), data, cfg, args.steps, 0) / args.steps)
        times["engine dense"].append(engine_loop(fresh(), data, cfg, None, 0) / args.steps)
        model = fresh()
        M.apply(model, ticket)
        times["engine 50% mask"].append(engine_loop(model, data, cfg, ticket, 0) / args.steps)
    base = statistics.median(times["plain"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:16s} {1 / med:6.2f} steps/s  ({med * 1000:7.1f} ms/step)  ratio to plain {med / base:.3f}")
    print("target: engine / plain <= 1.15 (seconds per step)")


if __name__ == "__main__":
    main()
