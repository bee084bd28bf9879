"""A text task whose important tokens are known: vocabulary expansion of pydoc-topics.

`pydoc-topics-expanded`: pydoc-topics (engine.text) with its WORDS most label-informative whole-word tokens
rewritten, in every train and test sentence, into new tokens that live in the tokenizer's `[unused0]`,
`[unused1]`, ... rows. The rewritten words no longer occur anywhere, so the meaning they carried can only be
learned by those `[unusedN]` rows: an embedding-level ticket finder (KS-Lottery) should find exactly them.
`known_tokens(data_config)` gives that set (None for any other task) for precision/recall and the recovery
curve.

Why this design: a "dialect" task that swapped existing words for other existing words was tried first and
failed (KS precision 0-15%): the swapped rows barely move in distribution. Here the new rows start with no
meaning for the task at all.

Informativeness of a token: the mutual information between "the sentence contains it" and the label, over the
training sentences, among whole-word alphabetic tokens of >= 3 characters seen in >= MIN_COUNT sentences.
"""
from __future__ import annotations

import math

EXPANDED = "pydoc-topics-expanded"
WORDS = 16
MIN_COUNT = 4


def unused_ids(tokenizer: str, n: int) -> list[int]:
    from .transformer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    ids = tok.convert_tokens_to_ids([f"[unused{j}]" for j in range(n)])
    if tok.unk_token_id in ids:
        from .errors import ConfigError
        raise ConfigError("data.tokenizer", tokenizer, f"has no [unused0..{n - 1}] tokens: {EXPANDED} needs a "
                          "BERT-style vocabulary (minilm, bert-tiny)")
    return ids


def informative_words(x, y, tokenizer: str, n: int = WORDS) -> list[int]:
    """The n token ids with the largest mutual information between presence in a sentence and its label."""
    import numpy as np

    from .transformer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    specials = set(tok.all_special_ids)
    classes = int(y.max()) + 1
    present: dict[int, np.ndarray] = {}
    for i, row in enumerate(x):
        for t in set(int(t) for t in row) - specials:
            present.setdefault(t, np.zeros(len(y), dtype=bool))[i] = True
    prior = np.bincount(y, minlength=classes) / len(y)
    scores = []
    for t, has in present.items():
        word = tok.convert_ids_to_tokens(t)
        if has.sum() < MIN_COUNT or not word.isalpha() or len(word) < 3:
            continue
        mi = 0.0
        for side in (has, ~has):
            p_side = side.mean()
            if p_side == 0:
                continue
            joint = np.bincount(y[side], minlength=classes) / len(y)
            for c in range(classes):
                if joint[c] > 0:
                    mi += joint[c] * math.log(joint[c] / (p_side * prior[c]))
        scores.append((-mi, t))
    return [t for _, t in sorted(scores)[:n]]


def expanded_arrays(tokenizer: str, length: int) -> dict:
    """pydoc-topics' arrays with the informative words rewritten into [unusedN] ids (see the module doc)."""
    import numpy as np

    from .text import _classification_arrays

    a = dict(_classification_arrays("pydoc-topics", tokenizer, length))
    words = informative_words(a["x_train"], a["y_train"], tokenizer)
    table = np.arange(max(int(a["x_train"].max()), int(a["x_test"].max()), max(unused_ids(tokenizer, WORDS))) + 1)
    table[words] = unused_ids(tokenizer, len(words))
    a["x_train"], a["x_test"] = table[a["x_train"]], table[a["x_test"]]
    return a


def known_tokens(data_config) -> list[int] | None:
    """The token ids that carry the rewritten words in `data_config`'s task, or None when it has no known set."""
    if data_config.dataset != EXPANDED:
        return None
    import numpy as np

    from .text import _classification_arrays

    a = _classification_arrays("pydoc-topics", data_config.tokenizer, data_config.max_length)
    n = len(informative_words(a["x_train"], np.asarray(a["y_train"]), data_config.tokenizer))
    return unused_ids(data_config.tokenizer, n)
