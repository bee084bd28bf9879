"""KS-Lottery (Yuan et al. 2024): the few token embeddings that matter for a task, found with a per-token
two-sample Kolmogorov-Smirnov test.

`--method ks-lottery --ks-top-k 4,16,64` on a transformer and a text task:
1. embedding fine-tune (variant "embedding", level 0): train only the token-embedding matrix (and the task
   head, new to the task) from the base weights; every other encoder parameter is frozen. Special tokens'
   rows ([CLS], [SEP], [PAD], [MASK], [UNK]) are frozen throughout.
2. per token row i: `scipy.stats.ks_2samp(before[i], after[i])` between its H embedding values before and
   after; tokens are ranked by the statistic D (ties: smaller p first, then token id).
3. for each K of --ks-top-k (levels 1, 2, ...): the top-K rows are the ticket; re-tune from the base with only
   those rows trainable (gradient masking: the other rows get zero gradient, so Adam's state for them stays 0
   and they stay bit-identical to the base; --weight-decay must be 0 for that). With --ks-top-k empty, one
   level: the tokens significant at --ks-alpha after the Benjamini-Hochberg correction
   (`scipy.stats.false_discovery_control`) over the candidate rows.
   The head alone (variant "head-only", level 0: no token re-tuned) is the zero of the recovery share
   (accuracy - head alone) / (embedding fine-tune - head alone) reported per K.
4. baselines at the same K, each its own variant: random tokens (drawn from the candidates with the run's
   seed), the most frequent tokens of the training data, the largest L2 change of the embedding fine-tune.

The ranking (D per token, p-values, the selections, and precision/recall against the known set when the task
has one, see engine.vocab_task) is stored as the run's "ks-lottery" record.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import masks as M
from ..config import option, validate
from ..errors import ConfigError
from ..registry import ANALYSES, METHODS, AnalysisSpec, MethodSpec
from ..seeding import derive_seed
from .lota import SparseAdaptation

EMBEDDING = "bert.embeddings.word_embeddings.weight"
BASELINES = ("random-tokens", "frequent-tokens", "l2-change")
RECORD = "ks-lottery"
SHOWN = 200  # tokens whose statistic the record lists by name (the full D vector is stored too)


@dataclass(frozen=True)
class KSOptions:
    ks_top_k: tuple = option((4, 16, 64), "ks-lottery: numbers of top-KS tokens re-tuned, one level each, comma "
                             "separated (empty: the tokens significant at --ks-alpha)", item_type=int, lo=1,
                             unique=True)
    ks_alpha: float = option(0.05, "ks-lottery: significance level after the Benjamini-Hochberg correction", lo=0,
                             hi=1, lo_open=True, hi_open=True)
    ks_baselines: bool = option(True, "ks-lottery: also re-tune random, most frequent and largest-L2-change tokens at "
                                "each K")

    def __post_init__(self):
        validate(self, "prune.")


# ---------------------------------------------------------------- the statistics (pure)
def ks_statistics(before: torch.Tensor, after: torch.Tensor, rows: torch.Tensor | None = None):
    """(D, p) per row of two [V, H] matrices: scipy.stats.ks_2samp between row i's values before and after.
    Rows outside `rows` (a bool [V]) are not tested: D = 0, p = 1."""
    from scipy.stats import ks_2samp

    v = before.shape[0]
    stat, pval = np.zeros(v), np.ones(v)
    idx = np.arange(v) if rows is None else rows.nonzero().flatten().numpy()
    if len(idx):
        b = before[idx].detach().double().cpu().numpy()
        a = after[idx].detach().double().cpu().numpy()
        res = ks_2samp(b, a, axis=1)
        stat[idx], pval[idx] = res.statistic, res.pvalue
    return stat, pval


def rank(stat: np.ndarray, pval: np.ndarray) -> np.ndarray:
    """Token ids by decreasing D (ties: smaller p, then smaller id)."""
    return np.lexsort((np.arange(len(stat)), pval, -stat))


def significant(pval: np.ndarray, candidates: np.ndarray, alpha: float) -> np.ndarray:
    """Candidate ids significant at `alpha` after Benjamini-Hochberg over the candidates."""
    from scipy.stats import false_discovery_control

    if len(candidates) == 0:
        return candidates
    adjusted = false_discovery_control(pval[candidates], method="bh")
    return candidates[adjusted <= alpha]


def precision_recall(selected, known) -> dict:
    selected, known = set(int(i) for i in selected), set(int(i) for i in known)
    hit = len(selected & known)
    return {"precision": hit / len(selected) if selected else 0.0, "recall": hit / len(known) if known else 0.0,
            "hits": hit}


def row_mask(shape, rows) -> M.Mask:
    """The embedding mask with `rows` (token ids) trainable."""
    m = torch.zeros(shape, dtype=torch.bool)
    m[torch.as_tensor(list(rows), dtype=torch.long)] = True
    return {EMBEDDING: m}


def special_ids(model_name: str) -> list[int]:
    from ..text import model_tokenizer
    from ..transformer import load_tokenizer

    return sorted(load_tokenizer(model_tokenizer(model_name)).all_special_ids)


def token_ids(x: torch.Tensor) -> torch.Tensor:
    """The token ids of a text split's x ([N, L] classification, [N, 2, L] MLM: row 0 holds the ids)."""
    return x[:, 0] if x.dim() == 3 else x


def frequency(x: torch.Tensor, vocab: int) -> np.ndarray:
    return torch.bincount(token_ids(x).flatten(), minlength=vocab).numpy()


def top(scores: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """The k candidates with the largest score (ties: smaller id)."""
    order = np.lexsort((candidates, -scores[candidates]))
    return candidates[order[:k]]


# ---------------------------------------------------------------- the method
def ks_lottery(ctx) -> None:
    opts: KSOptions = ctx.options
    base = ctx.init_weights
    shape = base[EMBEDDING].shape
    vocab = shape[0]
    specials = special_ids(ctx.model_name)
    candidates = np.setdiff1d(np.arange(vocab), np.array(specials, dtype=np.int64))

    full = row_mask(shape, candidates)
    tuned = ctx.train_variant("embedding", 0, full, base, 0, search=SparseAdaptation(full))
    none = row_mask(shape, [])  # the head alone: what re-tuning no token gives (the recovery curve's zero)
    head = ctx.train_variant("head-only", 0, none, base, 0, search=SparseAdaptation(none))
    gain = tuned.record["test_accuracy"] - head.record["test_accuracy"]
    before, after = base[EMBEDDING].cpu(), tuned.weights[EMBEDDING].cpu()
    cand_rows = torch.zeros(vocab, dtype=torch.bool)
    cand_rows[torch.from_numpy(candidates)] = True
    stat, pval = ks_statistics(before, after, cand_rows)
    order = rank(stat, pval)
    order = order[np.isin(order, candidates)]
    sig = significant(pval, candidates, opts.ks_alpha)
    l2 = (after - before).double().norm(dim=1).numpy()
    freq = frequency(ctx.data.train.x, vocab)

    from ..vocab_task import known_tokens
    known = known_tokens(ctx.config.data)
    ks = list(opts.ks_top_k) or [len(sig)]
    picks = {"ticket": [order[:k] for k in ks]}
    if opts.ks_baselines:
        rng = np.random.default_rng(derive_seed(ctx.config.seed, "ks-random"))
        picks["random-tokens"] = [rng.choice(candidates, size=k, replace=False) for k in ks]
        picks["frequent-tokens"] = [top(freq.astype(float), candidates, k) for k in ks]
        picks["l2-change"] = [top(l2, candidates, k) for k in ks]
    levels = []
    for level, k in enumerate(ks, start=1):
        row = {"level": level, "k": k}
        for variant, chosen in picks.items():
            rows = chosen[level - 1]
            mask = row_mask(shape, rows)
            trained = ctx.train_variant(variant, level, mask, base, 0, search=SparseAdaptation(mask))
            acc = trained.record["test_accuracy"]
            row[variant] = {"test_accuracy": acc, "tokens": [int(i) for i in rows],
                            "recovered": (acc - head.record["test_accuracy"]) / gain if gain > 0 else None}
            if known is not None:
                row[variant].update(precision_recall(rows, known))
        levels.append(row)

    from ..text import model_tokenizer
    from ..transformer import load_tokenizer
    tok = load_tokenizer(model_tokenizer(ctx.model_name))
    shown = order[:SHOWN]
    ctx.store.save_analysis(RECORD, {
        "analysis": RECORD, "correction": "benjamini-hochberg", "alpha": opts.ks_alpha,
        "significant": [int(i) for i in sig],
        "embedding_test_accuracy": tuned.record["test_accuracy"],
        "head_only_test_accuracy": head.record["test_accuracy"],
        "dense_test_accuracy": ctx.dense.record["test_accuracy"] if ctx.dense is not None else None,
        "top": [{"id": int(i), "token": tok.convert_ids_to_tokens(int(i)), "statistic": float(stat[i]),
                 "pvalue": float(pval[i]), "l2": float(l2[i])} for i in shown],
        "statistic": [round(float(s), 5) for s in stat],
        "known": None if known is None else [int(i) for i in known],
        "known_recall": known_recall_curve(known, order) if known is not None else None,
        "levels": levels,
    })


def known_recall_curve(known, order: np.ndarray, points: int = 64) -> list[dict]:
    """Recall of the known set among the top-K of the KS ranking for K = 1..points."""
    known = set(int(i) for i in known)
    out, hits = [], 0
    for k, i in enumerate(order[:points], start=1):
        hits += int(int(i) in known)
        out.append({"k": k, "recall": hits / len(known) if known else 0.0, "precision": hits / k})
    return out


def ticket_levels(config) -> int:
    """One level per K of --ks-top-k (empty: one)."""
    return max(1, len(config.prune.ks_top_k))


def own_trainings(config) -> int:
    """The embedding fine-tune, the head alone and the baselines at every K (progress totals)."""
    return 2 + (len(BASELINES) * ticket_levels(config) if config.prune.ks_baselines else 0)


def check(config, model) -> None:
    if config.train.weight_decay != 0:
        raise ConfigError("train.weight_decay", config.train.weight_decay, "ks-lottery needs 0: coupled weight decay "
                          "would move the embedding rows outside the ticket")
    params = dict(model.named_parameters())
    if EMBEDDING not in params:
        raise ConfigError("model.model", config.model.model, "ks-lottery needs a BERT-style transformer (a "
                          f"{EMBEDDING} matrix): --model minilm, bert-tiny or hf:PATH")
    vocab = params[EMBEDDING].shape[0]
    opts = config.prune.method_options()
    too_big = [k for k in opts.ks_top_k if k > vocab]
    if too_big:
        raise ConfigError("prune.ks_top_k", too_big[0], f"must be at most the vocabulary size ({vocab} tokens)")


def format_record(name: str, r: dict) -> str:
    head = r.get("head_only_test_accuracy")
    lines = [f"ks-lottery: embedding fine-tune test accuracy {r['embedding_test_accuracy']:.3f}"
             + (f" (head alone {head:.3f})" if head is not None else "") + "; "
             f"{len(r['significant'])} tokens significant at alpha {r['alpha']} ({r['correction']})",
             "top tokens: " + ", ".join(f"{t['token']} ({t['statistic']:.2f})" for t in r["top"][:10])]
    for row in r["levels"]:
        parts = []
        for variant in ("ticket", *BASELINES):
            if variant in row:
                v = row[variant]
                pr = f" P {v['precision']:.2f} R {v['recall']:.2f}" if "precision" in v else ""
                rec = f" recovered {v['recovered']:.0%}" if v.get("recovered") is not None else ""
                parts.append(f"{'ks' if variant == 'ticket' else variant} {v['test_accuracy']:.3f}{rec}{pr}")
        lines.append(f"K = {row['k']}: " + "; ".join(parts))
    return "\n".join(lines)


METHODS.register("ks-lottery", "KS-Lottery: fine-tune only the token embeddings, rank tokens by a per-token "
                 "two-sample KS test, re-tune only the top --ks-top-k rows from the base (Yuan et al. 2024)")(
    MethodSpec(ks_lottery, options=KSOptions, scopes=("global",), trains_controls=False, check=check,
               levels=ticket_levels, own_trainings=own_trainings,
               unread={**dict.fromkeys(("prune.density", "prune.prune_fraction", "prune.output_fraction"),
                                       "keeps the top --ks-top-k token embedding rows"),
                       "prune.rewind": "re-tunes its tickets from the base weights at step 0"}))
ANALYSES.register(RECORD, "KS-Lottery's token ranking and its selections (written by the method)")(
    AnalysisSpec(format_record))
