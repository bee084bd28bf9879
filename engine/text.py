"""Text tasks, offline and deterministic: a corpus of sentences from text that ships with Python.

The corpus: the docstrings of the standard library's modules, classes and functions (read with `ast`, never
imported) and the help topics of `pydoc_data.topics`, split into sentences, cleaned and de-duplicated, built
once per Python version and cached as JSON. Tasks built from it (tokenised once per tokenizer and length,
cached as .npz under the cache directory):

- `pydoc-mlm`: masked language modelling, BERT's recipe: 15% of each sentence's tokens predicted (at most
  `mlm_slots(L)`), of those 80% replaced by [MASK], 10% by a random token, 10% left; masking drawn once
  (static, as in the original BERT data) so every run sees the same task. x: [N, 2, L] (ids, prediction-slot
  flags), y: [N, slots] targets with -100 where a slot predicts nothing.
- `pydoc-modules`: which standard-library package a docstring sentence comes from (MODULE_CLASSES classes,
  few examples each).
- `pydoc-topics`: which pydoc help topic a sentence comes from (TOPIC_CLASSES classes, few examples each).
  The downstream tasks are deliberately hard: many classes and few examples per class, so tickets separate.
- `text:PATH`: your own texts and labels, a .jsonl ({"text": ..., "label": int, "split": "train"|"test"}, split
  optional: 20% test drawn otherwise) or a .npz (unicode arrays text_train, text_test, integer y_train, y_test).
- `hf:NAME`: a Hugging Face hub dataset with "text" and "label" columns and train/test splits, only with
  --download (the one thing here that uses the network; the package `datasets`: pip install -e '.[hub]').

The downstream tasks' test sentences are left out of pydoc-mlm's training split, so an MLM ticket never saw
them. Classification x: [N, L] token ids padded with the tokenizer's pad id; y: labels.

This module imports neither torch nor transformers at import time (config validation asks it about names).
"""
from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import re
import sys
import sysconfig
from pathlib import Path

from .errors import ConfigError
from .registry import DATASETS

SPLIT_SEED = 0
TEST_FRACTION = 0.2
MLM_PROBABILITY = 0.15
MODULE_CLASSES, MODULE_TRAIN, MODULE_TEST = 24, 24, 16   # classes, train (incl. val) and test examples per class
TOPIC_CLASSES, TOPIC_TRAIN, TOPIC_TEST = 12, 16, 8
CORPUS_VERSION = 1  # bump when the corpus recipe changes: caches are keyed on it

TEXT_TASKS = ("pydoc-mlm", "pydoc-modules", "pydoc-topics", "pydoc-topics-expanded")  # the last: engine.vocab_task
# transformer models and the tokenizer whose ids they read (hf:NAME reads its own: "hf:NAME")
MODEL_TOKENIZERS = {"minilm": "minilm", "bert-tiny": "minilm"}


# ---------------------------------------------------------------- names (no heavy imports)
def is_text_dataset(name: str) -> bool:
    return name in TEXT_TASKS or name.startswith(("text:", "hf:"))


def is_transformer(model: str) -> bool:
    return model in MODEL_TOKENIZERS or model.startswith("hf:")


def model_tokenizer(model: str) -> str:
    return MODEL_TOKENIZERS.get(model, model)


def check_pairing(dataset: str, model: str, tokenizer: str) -> None:
    """Text datasets go with transformer models (and vice versa), tokenised by the model's tokenizer."""
    if is_text_dataset(dataset) and not is_transformer(model):
        raise ConfigError("model.model", model, f"dataset {dataset} holds token ids: use a transformer model "
                          f"({', '.join(MODEL_TOKENIZERS)} or hf:PATH_OR_ID)")
    if is_transformer(model) and not is_text_dataset(dataset):
        raise ConfigError("data.dataset", dataset, f"model {model} reads token ids: use a text dataset "
                          f"({', '.join(TEXT_TASKS)}, text:PATH or hf:NAME)")
    if is_text_dataset(dataset) and tokenizer != model_tokenizer(model):
        raise ConfigError("data.tokenizer", tokenizer, f"model {model} reads the ids of tokenizer "
                          f"{model_tokenizer(model)}: pass --tokenizer {model_tokenizer(model)}")


def check_tokenizer_name(name) -> None:
    if not isinstance(name, str) or not (name in set(MODEL_TOKENIZERS.values()) or
                                         (name.startswith("hf:") and len(name) > 3)):
        raise ConfigError("data.tokenizer", name, "allowed: minilm or hf:PATH_OR_ID")


def mlm_slots(length: int) -> int:
    """Prediction slots per sequence of `length` tokens (BERT's max_predictions_per_seq at 15%)."""
    return max(1, math.ceil(MLM_PROBABILITY * length))


# ---------------------------------------------------------------- the corpus
def _cache() -> Path:
    from .transformer import cache_dir
    return cache_dir() / "text"


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"[A-Za-z]{2,}")


def sentences(text: str) -> list[str]:
    """Clean prose sentences of a docstring or help text: no code, no tables, 6-40 words, mostly words."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in para.splitlines()]
        if not lines or any(ln.startswith((">>>", "...", "$", "|", "+-", "=", "*", "-", ":")) for ln in lines):
            continue
        prose = " ".join(ln for ln in lines if ln)
        for s in _SENTENCE_END.split(prose):
            s = s.strip()
            words = s.split()
            if not 6 <= len(words) <= 40 or not s[0].isupper() or s[-1] not in ".!?":
                continue
            if len(_WORD.findall(s)) < 0.7 * len(words) or "::" in s or "  " in s:
                continue
            out.append(s)
    return out


def _stdlib_files() -> list[tuple[str, Path]]:
    """(top-level package, file) for the standard library's .py files, tests and demos left out."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idle_test", "__pycache__", "turtledemo", "_bundled", "dist-packages"}
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip and not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        for f in sorted(filenames):
            if f.endswith(".py"):
                top = rel.parts[0] if rel.parts else f[:-3]
                out.append((top, Path(dirpath) / f))
    return out


def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError):
        return []
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                 ast.ClassDef))]
    return [d for d in (ast.get_docstring(n) for n in nodes) if d]


def build_corpus() -> list[dict]:
    """[{"text", "source": "module" | "topic", "label": package or topic name}], de-duplicated: a sentence that
    occurs under two labels is dropped (its label would be ambiguous), one under a single label kept once."""
    import pydoc_data.topics

    raw: list[tuple[str, str, str]] = []
    for top, path in _stdlib_files():
        for doc in _docstrings(path):
            raw += [(s, "module", top) for s in sentences(doc)]
    for topic in sorted(pydoc_data.topics.topics):
        raw += [(s, "topic", topic) for s in sentences(pydoc_data.topics.topics[topic])]
    labels: dict[str, set] = {}
    for s, src, lab in raw:
        labels.setdefault(s, set()).add((src, lab))
    seen, out = set(), []
    for s, src, lab in raw:
        if len(labels[s]) == 1 and s not in seen:
            seen.add(s)
            out.append({"text": s, "source": src, "label": lab})
    return out


def corpus() -> list[dict]:
    """The corpus, built once per Python version and cached."""
    path = _cache() / f"corpus-v{CORPUS_VERSION}-py{sys.version_info.major}.{sys.version_info.minor}.json"
    if path.exists():
        return json.loads(path.read_text())
    from .store import write_json

    rows = build_corpus()
    write_json(path, rows)
    return rows


def _classification(source: str, n_classes: int, n_train: int, n_test: int):
    """The n_classes labels of `source` with the most sentences (at least n_train + n_test each, ties by
    name); n_train + n_test sentences of each drawn with SPLIT_SEED. Returns (train texts, train labels,
    test texts, test labels, class names)."""
    import numpy as np

    rows = [r for r in corpus() if r["source"] == source and not r["label"].startswith("_")]
    by_label: dict[str, list[str]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r["text"])
    ranked = sorted((lab for lab, t in by_label.items() if len(t) >= n_train + n_test),
                    key=lambda lab: (-len(by_label[lab]), lab))[:n_classes]
    classes = sorted(ranked)
    rng = np.random.default_rng(SPLIT_SEED)
    tr_x, tr_y, te_x, te_y = [], [], [], []
    for c, lab in enumerate(classes):
        texts = by_label[lab]
        pick = rng.permutation(len(texts))[:n_train + n_test]
        tr_x += [texts[i] for i in pick[:n_train]]
        tr_y += [c] * n_train
        te_x += [texts[i] for i in pick[n_train:]]
        te_y += [c] * n_test
    return tr_x, tr_y, te_x, te_y, classes


def downstream_test_texts() -> set[str]:
    out: set[str] = set()
    for spec in _TASKS.values():
        out |= set(_classification(*spec)[2])
    return out


_TASKS = {"pydoc-modules": ("module", MODULE_CLASSES, MODULE_TRAIN, MODULE_TEST),
          "pydoc-topics": ("topic", TOPIC_CLASSES, TOPIC_TRAIN, TOPIC_TEST)}


# ---------------------------------------------------------------- tokenising (cached)
def _tokenizer_key(tokenizer: str) -> str:
    from .transformer import load_tokenizer, source_path

    tok = load_tokenizer(tokenizer)
    return hashlib.sha256(f"{source_path(tokenizer)}|{len(tok)}|{type(tok).__name__}".encode()).hexdigest()[:10]


def encode(texts: list[str], tokenizer: str, length: int, *, truncate: bool, field: str = "data.dataset"):
    """[N, length] int64 ids (padded with the pad id). Longer texts are cut (our corpus) or refused (yours)."""
    import numpy as np

    from .transformer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    enc = tok(list(texts), truncation=truncate, max_length=length if truncate else None, padding=False)["input_ids"]
    if not truncate:
        for i, ids in enumerate(enc):
            if len(ids) > length:
                raise ConfigError("data.max_length", length, f"text {i} of {field} has {len(ids)} tokens: raise "
                                  "--max-length (up to the model's limit) or shorten the text")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out = np.full((len(enc), length), pad, dtype=np.int64)
    for i, ids in enumerate(enc):
        out[i, :len(ids)] = ids
    return out


def mask_tokens(ids, tokenizer: str, rng):
    """BERT's masking of [N, L] ids, drawn from `rng`: returns ([N, 2, L] ids+flags, [N, slots] targets)."""
    import numpy as np

    from .transformer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    n, length = ids.shape
    slots = mlm_slots(length)
    special = np.isin(ids, np.array(sorted(set(tok.all_special_ids)), dtype=np.int64))
    vocab = len(tok)
    x = np.zeros((n, 2, length), dtype=np.int64)
    y = np.full((n, slots), -100, dtype=np.int64)
    masked_ids = ids.copy()
    for i in range(n):
        candidates = np.flatnonzero(~special[i])
        k = min(slots, max(1, round(MLM_PROBABILITY * len(candidates)))) if len(candidates) else 0
        chosen = np.sort(rng.choice(candidates, size=k, replace=False)) if k else np.array([], dtype=np.int64)
        rest = np.setdiff1d(np.arange(length), chosen)
        flagged = np.sort(np.concatenate([chosen, rest[:slots - k]]))  # dummy slots fill up to `slots`
        target = np.full(length, -100, dtype=np.int64)
        target[chosen] = ids[i, chosen]
        y[i] = target[flagged]
        x[i, 1, flagged] = 1
        roll = rng.random(k)
        masked_ids[i, chosen[roll < 0.8]] = tok.mask_token_id
        swap = chosen[(roll >= 0.8) & (roll < 0.9)]
        masked_ids[i, swap] = rng.integers(0, vocab, size=len(swap))
    x[:, 0] = masked_ids
    return x, y


def _cached_arrays(name: str, tokenizer: str, length: int, make) -> dict:
    import numpy as np

    path = _cache() / f"{name}-v{CORPUS_VERSION}-{_tokenizer_key(tokenizer)}-L{length}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    arrays = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return arrays


def mlm_texts() -> dict[str, list[str]]:
    """pydoc-mlm's sentences: a fixed 10% test split; the rest, less the downstream tasks' test sentences, train."""
    import numpy as np

    held_out = downstream_test_texts()
    texts = [r["text"] for r in corpus()]
    order = np.random.default_rng(SPLIT_SEED).permutation(len(texts))
    n_test = int(round(TEST_FRACTION * len(texts) / 2))
    return {"train": [texts[i] for i in order[n_test:] if texts[i] not in held_out],
            "test": [texts[i] for i in order[:n_test]]}


def _mlm_arrays(tokenizer: str, length: int) -> dict:
    import numpy as np

    def make():
        out = {}
        for split, texts in mlm_texts().items():
            ids = encode(texts, tokenizer, length, truncate=True)
            x, y = mask_tokens(ids, tokenizer, np.random.default_rng([SPLIT_SEED, len(split)]))
            out[f"x_{split}"], out[f"y_{split}"] = x, y
        return out

    return _cached_arrays("pydoc-mlm", tokenizer, length, make)


def mlm_corpus_ids(tokenizer: str, length: int):
    """pydoc-mlm's training split as CPU tensors (x, y): what an MLM head warms up on."""
    import torch

    a = _mlm_arrays(tokenizer, length)
    return torch.from_numpy(a["x_train"]), torch.from_numpy(a["y_train"])


def _classification_arrays(task: str, tokenizer: str, length: int) -> dict:
    import numpy as np

    def make():
        tr_x, tr_y, te_x, te_y, _ = _classification(*_TASKS[task])
        return {"x_train": encode(tr_x, tokenizer, length, truncate=True), "y_train": np.array(tr_y, dtype=np.int64),
                "x_test": encode(te_x, tokenizer, length, truncate=True), "y_test": np.array(te_y, dtype=np.int64)}

    return _cached_arrays(task, tokenizer, length, make)


# ---------------------------------------------------------------- users' own texts
def read_user_texts(path: str):
    """(train texts, train labels, test texts, test labels) from a .jsonl or .npz; one-line errors."""
    import numpy as np

    field, shown = "data.dataset", f"text:{path}"
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise ConfigError(field, shown, "the file does not exist")
    if path.endswith(".jsonl"):
        rows, unsplit = [], []  # unsplit: the lines without a split
        with open(path, "rb") as f:  # decoded line by line: an error names its line
            for i, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8-sig" if i == 1 else "utf-8")  # a byte order mark (Notepad) is fine
                except UnicodeDecodeError as e:
                    raise ConfigError(field, shown, f"line {i} is not UTF-8 (byte {raw[e.start]:#04x}): save the "
                                      "file as UTF-8") from None
                if not line.strip():
                    continue
                if not rows and line.lstrip().startswith("["):  # a JSON array of the examples, not one per line
                    raise ConfigError(field, shown, "holds a JSON array; a .jsonl has one JSON object per line: "
                                      "{\"text\": ..., \"label\": ...}")
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError(field, shown, f"line {i} is not JSON ({e.msg})") from None
                needs = f"line {i} needs a \"text\" string and an integer \"label\""
                if not isinstance(r, dict) or not isinstance(r.get("text"), str):
                    raise ConfigError(field, shown, needs)
                if isinstance(r.get("label"), bool) or not isinstance(r.get("label"), int):
                    raise ConfigError(field, shown, f"{needs}, a class index 0..K-1 (its label is {r.get('label')!r})")
                if r.get("split", "train") not in ("train", "test"):
                    raise ConfigError(field, shown, f"line {i}: split must be train or test")
                rows.append((r["text"], r.get("label"), r.get("split")))
                if r.get("split") is None:
                    unsplit.append(i)
        if unsplit and len(unsplit) < len(rows):  # the fixed split below would silently replace the given ones
            raise ConfigError(field, shown, f"line {unsplit[0]} has no \"split\" while other lines have one: give "
                              "every line a split (train or test) or none (a fixed 20% is then held out for testing)")
        if unsplit:  # no split given: a fixed 20% test split
            order = np.random.default_rng(SPLIT_SEED).permutation(len(rows))
            test = set(order[:max(1, round(TEST_FRACTION * len(rows)))].tolist())
            rows = [(t, lab, "test" if i in test else "train") for i, (t, lab, _) in enumerate(rows)]
        parts = {s: ([t for t, _, sp in rows if sp == s], [lab for _, lab, sp in rows if sp == s])
                 for s in ("train", "test")}
    elif path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as f:
                missing = [k for k in ("text_train", "y_train", "text_test", "y_test") if k not in f.files]
                if missing:
                    raise ConfigError(field, shown, f"missing arrays {missing}")
                parts = {}
                for s in ("train", "test"):
                    texts = f[f"text_{s}"]
                    if texts.dtype.kind not in "US" or texts.ndim != 1:  # str() made "0", "1" of numbers
                        raise ConfigError(field, shown, f"text_{s} holds {texts.dtype} values of shape {texts.shape}; "
                                          "it must hold strings, one per example")
                    if texts.dtype.kind == "S":  # byte strings (str() made "b'...'" of them): UTF-8
                        texts = np.char.decode(texts, "utf-8")
                    labels = f[f"y_{s}"]
                    if labels.ndim != 1 or len(labels) != len(texts):
                        raise ConfigError(field, shown, f"text_{s} holds {len(texts)} texts and y_{s} labels of shape "
                                          f"{labels.shape}; it must hold one label per text")
                    parts[s] = (texts.tolist(), labels.tolist())
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(field, shown, f"could not be read as .npz of unicode texts and integer labels "
                              f"without pickle ({e})") from None
    else:
        raise ConfigError(field, shown, "must be a .jsonl or .npz file")
    return checked_labels(parts, field, shown)


def checked_labels(parts: dict, field: str, shown: str):
    """{"train"|"test": (texts, labels)} -> the 4-tuple, once every label is an integer >= 0 and every test label
    one of the training labels' range; one-line errors otherwise."""
    for s, (texts, labels) in parts.items():
        if not texts:
            raise ConfigError(field, shown, f"has no {s} texts")
        bad = next((lab for lab in labels if isinstance(lab, bool) or not isinstance(lab, int) or lab < 0), "ok")
        if bad != "ok":
            raise ConfigError(field, shown, f"label {bad!r} is out of range: labels must be integers >= 0")
    n_classes = max(parts["train"][1]) + 1
    out_of_range = [lab for lab in parts["test"][1] if lab >= n_classes]
    if out_of_range:
        raise ConfigError(field, shown, f"test label {out_of_range[0]} is out of range: the training labels are "
                          f"0..{n_classes - 1}")
    return (*parts["train"], *parts["test"])


def read_hub_texts(cfg):
    """(train texts, train labels, test texts, test labels) of hub dataset `hf:NAME`, downloaded by the
    `datasets` package, and only with --download (offline or without it: a one-line error)."""
    field, shown, name = "data.dataset", cfg.dataset, cfg.dataset[3:]
    if not cfg.download:
        raise ConfigError(field, shown, "a hub dataset needs the network: pass --download (nothing is downloaded "
                          "without it)")
    try:
        import datasets
    except ImportError:
        raise ConfigError(field, shown, "hub datasets need the package datasets: pip install -e '.[hub]'") from None
    try:
        loaded = datasets.load_dataset(name)
    except Exception as e:  # no network, unknown name, ...: whatever the hub says, on one line
        why = (str(e).strip().splitlines() or [""])[0][:200]
        raise ConfigError(field, shown, f"could not be downloaded ({type(e).__name__}: {why})") from None
    missing = [s for s in ("train", "test") if s not in loaded]
    if missing:
        raise ConfigError(field, shown, f"has no {missing[0]} split (splits: {', '.join(loaded)})")
    out = {}
    for split in ("train", "test"):
        columns = loaded[split].column_names
        if "text" not in columns or "label" not in columns:
            raise ConfigError(field, shown, f"needs \"text\" and \"label\" columns (its {split} split has "
                              f"{', '.join(columns)})")
        out[split] = (list(loaded[split]["text"]), list(loaded[split]["label"]))
    return checked_labels(out, field, shown)


# ---------------------------------------------------------------- Datasets for the engine
def load_text(cfg):
    """A text Dataset (engine.data.Dataset of CPU tensors) for DataConfig `cfg`."""
    import numpy as np
    import torch

    from .data import Dataset, Split

    name, tokenizer, length = cfg.dataset, cfg.tokenizer, cfg.max_length
    if name == "pydoc-mlm":
        a = _mlm_arrays(tokenizer, length)
    elif name in _TASKS:
        a = _classification_arrays(name, tokenizer, length)
    elif name == "pydoc-topics-expanded":
        from .vocab_task import expanded_arrays
        a = expanded_arrays(tokenizer, length)
    else:
        tr_x, tr_y, te_x, te_y = read_hub_texts(cfg) if name.startswith("hf:") else read_user_texts(name[5:])
        a = {"x_train": encode(tr_x, tokenizer, length, truncate=False, field=name), "y_train": np.array(tr_y),
             "x_test": encode(te_x, tokenizer, length, truncate=False, field=name), "y_test": np.array(te_y)}
    y_tr = a["y_train"]
    n_val = max(1, int(round(cfg.val_fraction * len(y_tr))))
    if len(y_tr) - n_val < 1:
        raise ConfigError("data.val_fraction", cfg.val_fraction, f"leaves no training data ({len(y_tr)} examples)")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y_tr))

    def split(x, y) -> Split:
        return Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y)))

    if name == "pydoc-mlm":
        from .transformer import load_tokenizer
        classes = len(load_tokenizer(tokenizer))
    else:
        classes = int(max(a["y_train"].max(), a["y_test"].max())) + 1
    x_tr = a["x_train"]
    return Dataset(name, split(x_tr[order[n_val:]], y_tr[order[n_val:]]), split(x_tr[order[:n_val]], y_tr[order[:n_val]]),
                   split(a["x_test"], a["y_test"]), tuple(x_tr.shape[1:]), classes)


def _register(name: str, help: str):
    DATASETS.register(name, help)(load_text)


_register("pydoc-mlm", "masked language modelling on ~13k sentences of Python's own docs (15% masked, 80/10/10); "
          "transformer models only")
_register("pydoc-modules", f"which of {MODULE_CLASSES} standard-library packages a docstring sentence is from "
          f"({MODULE_TRAIN} train / {MODULE_TEST} test each); transformers only")
_register("pydoc-topics", f"which of {TOPIC_CLASSES} pydoc help topics a sentence is from ({TOPIC_TRAIN} train / "
          f"{TOPIC_TEST} test each); transformers only")
_register("pydoc-topics-expanded", "pydoc-topics with its most informative words rewritten into [unusedN] tokens: "
          "a task whose important embedding rows are known (engine.vocab_task); transformers only")
