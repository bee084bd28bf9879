"""A researcher's own model (`engine.run(cfg, model=...)`) and own data (`npz:PATH`, `text:PATH`), as the README's
"Your own model and data" describes them: every case either trains correctly (masks applied, pruned weights exactly
zero, resumable, listed, exported) or is refused in one line before anything is stored."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import engine
from engine.cli import main
from engine.config import DataConfig
from engine.data import load
from engine.store import RunStore, load_tensors

from conftest import tiny


def quick(**changes) -> engine.RunConfig:
    return tiny(**{"train.epochs": 1, "prune.levels": 1, "prune.controls": (), **changes})


class ConvBN(nn.Module):
    def __init__(self, channels=4):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels * 64, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class BiasFree(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 16, bias=False)
        self.b = nn.Linear(16, 10, bias=False)
        self.register_buffer("scale", torch.tensor(0.5))  # a buffer rides along in every state dict

    def forward(self, x):
        return self.b(torch.relu(self.a(x.flatten(1) * self.scale)))


class Recurrent(nn.Module):
    """A GRU (never pruned: not a Linear or Conv) reading the 8 rows of a digit, then a Linear head."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(8, 16, batch_first=True)
        self.hidden = nn.Linear(16, 16)
        self.out = nn.Linear(16, 10)

    def forward(self, x):
        h, _ = self.rnn(x.view(len(x), 8, 8))
        return self.out(torch.relu(self.hidden(h[:, -1])))


class Embedded(nn.Module):
    """An Embedding (never pruned) of quantised pixels."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(9, 2)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc(self.emb((x.clamp(-2, 2) * 2 + 4).long()).flatten(1))


def nothing_stored(runs) -> bool:
    return not runs.exists() or not any(runs.iterdir())


def mlp(hidden=16, act=nn.ReLU):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), act(), nn.Linear(hidden, 10))


WORKING = {"sequential": mlp, "conv_bn": ConvBN, "bias_free_with_buffer": BiasFree, "gru": Recurrent,
           "embedding": Embedded}


@pytest.mark.parametrize("name", WORKING)
def test_own_modules_train_prune_resume_list_and_export(tmp_path, name, capsys):
    runs = tmp_path / "runs"
    torch.manual_seed(0)
    net = WORKING[name]()
    s = engine.run(quick(), runs_dir=runs, model=net)
    assert s["status"] == "completed" and s["model"] == f"custom:{type(net).__name__}"
    store = RunStore(runs, s["run_id"])
    mask, weights = store.load_level("ticket", 1)
    assert set(mask) == set(engine.masks.prunable(net)) and s["levels"][0]["density"] < 1
    for n, m in mask.items():
        assert not m.all() and torch.all(weights[n][~m] == 0), n  # pruned weights are exactly zero after training

    events = []
    again = engine.run(quick(), runs_dir=runs, model=net, on_event=events.append)
    assert again["run_id"] == s["run_id"] and again["levels"] == s["levels"]
    assert all(e.reused for e in events if type(e).__name__ == "LevelDone")  # nothing trained twice

    assert main(["list", "--runs-dir", str(runs)]) == 0
    assert s["run_id"] in capsys.readouterr().out
    assert main(["show", s["run_id"], "--runs-dir", str(runs)]) == 0
    assert f"custom:{type(net).__name__}" in capsys.readouterr().out
    out = tmp_path / "ticket.safetensors"
    assert main(["export", s["run_id"], "--out", str(out), "--runs-dir", str(runs)]) == 0
    exported = load_tensors(out)
    fresh = WORKING[name]()
    fresh.load_state_dict({k: v for k, v in exported.items() if not k.startswith("mask.")})  # strict: every key
    for n, m in mask.items():
        assert torch.all(fresh.state_dict()[n][~m] == 0)


def test_a_cancelled_own_module_run_resumes_where_it_stopped(tmp_path):
    import threading

    cancel = threading.Event()

    def stop_after_level_1(event):
        if type(event).__name__ == "LevelDone" and event.level == 1 and event.variant == "ticket":
            cancel.set()

    cfg = quick(**{"prune.levels": 3})
    torch.manual_seed(0)
    s = engine.run(cfg, runs_dir=tmp_path / "runs", model=ConvBN(), on_event=stop_after_level_1, cancel=cancel)
    assert s["status"] == "cancelled" and len(s["levels"]) == 1
    events = []
    torch.manual_seed(0)
    again = engine.run(cfg, runs_dir=tmp_path / "runs", model=ConvBN(), on_event=events.append)
    assert again["run_id"] == s["run_id"] and again["status"] == "completed" and len(again["levels"]) == 3
    done = [(e.level, e.reused) for e in events if type(e).__name__ == "LevelDone"]
    assert done == [(0, True), (1, True), (2, False), (3, False)]


def test_the_readme_example_of_an_own_module_runs_and_is_found_again(tmp_path, monkeypatch):
    from pathlib import Path
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Your own model and data", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.S)
    monkeypatch.chdir(tmp_path)
    code = code.replace('"train.epochs": 2, "prune.levels": 2', '"train.epochs": 1, "prune.levels": 1')  # faster
    first, again = {}, {}
    exec(code, first)
    exec(code, again)
    assert first["summary"]["run_id"] == again["summary"]["run_id"]
    ticket, mask = again["ticket"], again["mask"]
    assert ticket.out.weight_mask.equal(mask["out.weight"].float())  # torch.nn.utils.prune holds the mask
    assert torch.all(ticket.hidden.weight[~mask["hidden.weight"]] == 0)
    assert re.fullmatch(r"imp-net-digits-\w+-custom\w{8}", first["summary"]["run_id"])
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [first["summary"]["run_id"]]


def test_the_run_id_names_the_class_and_follows_the_module(tmp_path):
    """Same module again: same id (resumed); another width, another activation or other initial values: a new
    run. The id names the module's class, not the config's registry model it never used."""
    from engine.runner import _model_plan

    data = load(DataConfig())

    def run_id(make, seed=0):
        torch.manual_seed(seed)
        return _model_plan(quick(), data, make())[2]

    first = run_id(mlp)
    assert first.startswith("imp-sequential-digits-") and "-custom" in first and "lenet300" not in first
    assert run_id(mlp) == first
    assert len({first, run_id(lambda: mlp(hidden=17)), run_id(lambda: mlp(act=nn.Tanh)), run_id(mlp, seed=1)}) == 4


@pytest.mark.parametrize("method", ["imp", "oneshot", "snip"])
def test_a_module_whose_only_prunable_layer_is_its_output_prunes_globally(tmp_path, method):
    """Embedding + one Linear: the Linear is the output layer, pruned at --output-fraction; the global pool of the
    other layers is empty (it failed after training the dense net: torch.cat() of an empty list)."""
    torch.manual_seed(0)
    s = engine.run(quick(**{"prune.scope": "global", "prune.method": method, "prune.density": 0.5}),
                   runs_dir=tmp_path / "runs", model=Embedded())
    assert s["status"] == "completed" and set(s["levels"][0]["layers"]) == {"fc.weight"}


class OwnLinear(nn.Module):
    """A layer type of the user's own: unknown to the pruner."""

    def __init__(self, fan_in, fan_out):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in) / fan_in ** 0.5)

    def forward(self, x):
        return x @ self.weight.T


class NamesItsPrunableWeights(nn.Module):
    def __init__(self):
        super().__init__()
        self.own, self.out = OwnLinear(64, 16), nn.Linear(16, 10)

    def forward(self, x):
        return self.out(torch.relu(self.own(x.flatten(1))))

    def prunable_names(self):  # the README's way to prune a layer type of one's own
        return ["own.weight", "out.weight"]


def test_own_layer_types_are_pruned_when_the_module_names_them(tmp_path):
    torch.manual_seed(0)
    s = engine.run(quick(), runs_dir=tmp_path / "runs", model=NamesItsPrunableWeights())
    assert set(s["levels"][0]["layers"]) == {"own.weight", "out.weight"} and s["levels"][0]["layers"]["own.weight"] < 1
    mask, weights = RunStore(tmp_path / "runs", s["run_id"]).load_level("ticket", 1)
    assert torch.all(weights["own.weight"][~mask["own.weight"]] == 0)



class BranchesOnValues(nn.Module):
    """Plain Linear layers, but a forward vmap cannot batch (a Python branch on a tensor's value)."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(64, 16)
        self.out = nn.Linear(16, 10)

    def forward(self, x):
        h = torch.relu(self.hidden(x.flatten(1)))
        if h.mean() > 0:
            h = h * 1.0
        return self.out(h)


def test_an_own_module_trains_its_controls_one_by_one_where_auto_would_batch_them(tmp_path, monkeypatch):
    """On CUDA `--batched auto` batches every model of tested layer types through vmap; an own forward may do what
    vmap cannot (a branch on a value, .item()): it failed at level 1 after the dense net trained. Own modules train
    one by one (auto_reason is patched to say 'batch', as on CUDA)."""
    from engine import batched

    monkeypatch.setattr(batched, "auto_reason", lambda *a, **k: None)
    torch.manual_seed(0)
    s = engine.run(quick(**{"prune.controls": ("reinit", "random")}), runs_dir=tmp_path / "runs",
                   model=BranchesOnValues())
    assert s["status"] == "completed" and set(s["controls"]) == {"reinit", "random"}


# ---------------------------------------------------------------- own modules the runner refuses


class ReturnsTuple(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        out = self.fc(x.flatten(1))
        return out, out.softmax(1)


class ReturnsDict(ReturnsTuple):
    def forward(self, x):
        return {"logits": self.fc(x.flatten(1))}


class DictWhenEvaluated(ReturnsTuple):
    def forward(self, x):
        out = self.fc(x.flatten(1))
        return out if self.training else {"logits": out}


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 10)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.out(self.b(torch.relu(self.a(x.flatten(1)))))


class ScalesItsInputInPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = x.flatten(1)
        x.mul_(2.0)  # evaluation passes views of the data set's tensors: this doubled the test set at every one
        return self.fc(x)


class UnusedLayer(nn.Module):
    """A leftover auxiliary head: never called, so its weight never gets a gradient."""

    def __init__(self, call_it=False):
        super().__init__()
        self.hidden, self.aux, self.out = nn.Linear(64, 16), nn.Linear(16, 3), nn.Linear(16, 10)
        self.call_it = call_it

    def forward(self, x):
        h = torch.relu(self.hidden(x.flatten(1)))
        if self.call_it:
            self.aux(h)  # called, its result thrown away
        return self.out(h)


def frozen():
    net = mlp()
    net[1].requires_grad_(False)
    return net


def weight_normed():
    net = mlp()
    nn.utils.parametrizations.weight_norm(net[1])
    return net


def pruned_by_torch():
    net = mlp()
    torch_prune.l1_unstructured(net[3], "weight", 0.5)
    return net


def untrained_lazy():
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(16), nn.ReLU(), nn.Linear(16, 10))


REFUSED = {  # module -> what its one-line refusal says
    "tuple output": (ReturnsTuple, "returns a tuple"),
    "dict output": (ReturnsDict, "returns a dict"),
    "dict output in eval mode": (DictWhenEvaluated, "in eval mode, forward returns a dict"),
    "too few classes": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 5)), "shape (64, 5) for 64 examples"),
    "examples merged": (lambda: nn.Sequential(nn.Flatten(0), nn.Unflatten(0, (1, 64 * 64)), nn.Linear(64 * 64, 10)),
                        "shape (1, 10) for 64 examples"),
    "wrong input size": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(100, 10)), "mat1 and mat2"),
    "float64": (lambda: mlp().double(), "float64"),
    "float16": (lambda: mlp().half(), "float16"),
    "tied weights": (Tied, "tied"),
    "frozen weight": (frozen, "requires_grad"),
    "lazy layer": (untrained_lazy, "lazy"),
    "weight norm": (weight_normed, "parametrization"),
    "torch.nn.utils.prune": (pruned_by_torch, "torch.nn.utils.prune"),
    "input changed in place": (ScalesItsInputInPlace, "changes its input in place"),
    "a layer never called": (UnusedLayer, "'aux.weight' gets no gradient"),
    "a layer whose result is unused": (lambda: UnusedLayer(call_it=True), "'aux.weight' gets no gradient"),
    "TorchScript": (lambda: torch.jit.script(mlp()), "pass the module before torch.jit.script"),
    "nothing to prune": (lambda: nn.Sequential(nn.Flatten(), nn.Bilinear(64, 64, 10)), "Linear or Conv"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_unsupported_modules_are_refused_in_one_line_before_anything_is_stored(tmp_path, case):
    make, needle = REFUSED[case]
    runs = tmp_path / "runs"
    with pytest.raises(engine.ConfigError) as info:
        engine.run(quick(), runs_dir=runs, model=make())
    message = str(info.value)
    assert info.value.field == "model" and needle in message and "\n" not in message, message
    assert nothing_stored(runs)  # no half-written run


class HeadFirst(nn.Module):
    """Its output layer is created first: in module order the last Linear is a hidden one."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(16, 10)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())

    def forward(self, x):
        return self.head(self.body(x))


def test_an_output_layer_created_before_the_hidden_ones_is_refused(tmp_path):
    """The last Linear/Conv in module order is taken as the output layer (pruned at --output-fraction); a module
    whose forward ends in another one would have its hidden layer spared and its head pruned as a hidden one."""
    with pytest.raises(engine.ConfigError, match="'head.weight'.*'body.1.weight'.*create the output layer last"):
        engine.run(quick(), runs_dir=tmp_path / "runs", model=HeadFirst())
    assert nothing_stored(tmp_path / "runs")


@pytest.mark.parametrize("setting, value", [("model.width", 0.5), ("model.init", "xavier_normal"),
                                            ("model.model", "conv2")])
def test_registry_model_settings_are_refused_with_an_own_module(tmp_path, setting, value):
    """An own module is its own architecture and theta_0: a model.* setting would change the run id, not the run."""
    with pytest.raises(engine.ConfigError) as info:
        engine.run(quick(**{setting: value}), runs_dir=tmp_path / "runs", model=mlp())
    assert info.value.field == setting and "own module" in str(info.value)
    assert nothing_stored(tmp_path / "runs")


def test_the_class_instead_of_an_instance_says_so(tmp_path):
    with pytest.raises(engine.ConfigError, match=r"the class ConvBN; pass an instance: model=ConvBN\(\)"):
        engine.run(quick(), runs_dir=tmp_path / "runs", model=ConvBN)


def test_analyses_of_an_own_module_run_refuse_in_one_line_and_store_nothing(tmp_path, capsys):
    """The store keeps an own module's weights, not its code: analyses that rebuild the model refuse. `sanity` made
    a stray run of the config's registry model (lenet300) beside it and failed on a KeyError."""
    runs = tmp_path / "runs"
    torch.manual_seed(0)
    s = engine.run(quick(), runs_dir=runs, model=mlp())
    for analysis in ("sanity", "barrier", "persistence"):
        assert main(["analyze", s["run_id"], analysis, "--runs-dir", str(runs)]) != 0
        err = capsys.readouterr().err.strip()
        assert "own module (custom:Sequential)" in err and "\n" not in err, err
    assert [p.name for p in runs.iterdir()] == [s["run_id"]]


# ---------------------------------------------------------------- own data: npz:PATH
def digits_npz(path, **changes):
    """The digits as a researcher might save them: x (N, 8, 8) in [0, 1], y integers 0..9."""
    d = load(DataConfig())  # standardised, (N, 1, 8, 8): good enough as someone's own images
    arrays = {"x_train": d.train.x[:, 0].numpy(), "y_train": d.train.y.numpy(),
              "x_test": d.test.x[:, 0].numpy(), "y_test": d.test.y.numpy()}
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return f"npz:{path}"


def test_channels_last_images_are_read_as_channels_first(tmp_path):
    """(N, H, W, C) with C of 1, 3 or 4 (what PIL, TensorFlow and Keras save) is turned to (N, C, H, W): the conv
    nets see C channels of H x W images, not H channels of W x C ones."""
    d = load(DataConfig())
    x_tr, x_te = d.train.x[:, 0].numpy(), d.test.x[:, 0].numpy()
    rgb = lambda x: np.stack([x, -x, 2 * x], axis=-1)  # noqa: E731  three distinct channels
    last = load(DataConfig(dataset=digits_npz(tmp_path / "last.npz", x_train=rgb(x_tr), x_test=rgb(x_te))))
    first = load(DataConfig(dataset=digits_npz(tmp_path / "first.npz", x_train=rgb(x_tr).transpose(0, 3, 1, 2),
                                               x_test=rgb(x_te).transpose(0, 3, 1, 2))))
    assert last.input_shape == (3, 8, 8) and torch.allclose(last.train.x, first.train.x, atol=1e-5)
    gray = load(DataConfig(dataset=digits_npz(tmp_path / "gray.npz", x_train=x_tr[..., None], x_test=x_te[..., None])))
    assert gray.input_shape == (1, 8, 8)


def test_uint8_and_bool_images_train(tmp_path):
    """Pixels 0..255 as uint8 (and binary images as bool) are numbers: cast to float32, standardised."""
    d = load(DataConfig())
    raw = lambda x: (x[:, 0].numpy() * 40 + 100).clip(0, 255).astype(np.uint8)  # noqa: E731
    spec = digits_npz(tmp_path / "u8.npz", x_train=raw(d.train.x), x_test=raw(d.test.x))
    assert load(DataConfig(dataset=spec)).train.x.dtype == torch.float32
    binary = digits_npz(tmp_path / "b.npz", x_train=d.train.x[:, 0].numpy() > 0, x_test=d.test.x[:, 0].numpy() > 0)
    s = engine.run(quick(**{"data.dataset": binary}), runs_dir=tmp_path / "runs")
    assert s["status"] == "completed"


def _labels(d, how):
    return {k: how(getattr(d, s).y.numpy()) for k, s in (("y_train", "train"), ("y_test", "test"))}


NPZ_REFUSED = {  # what a researcher's file holds -> what the one line says
    "other key names": (lambda d: {"x_train": None, "X_train": d.train.x.numpy()}, "'X_train'])"),
    "float labels": (lambda d: _labels(d, lambda y: y.astype(np.float32)), "float32 values: save y.astype(int)"),
    "fractional labels": (lambda d: _labels(d, lambda y: y + 0.5), "float64 values such as "),
    "one-hot labels": (lambda d: _labels(d, lambda y: np.eye(10)[y]), "one-hot"),
    "labels as a column": (lambda d: _labels(d, lambda y: y[:, None]), "y.ravel()"),
    "negative labels": (lambda d: _labels(d, lambda y: y - 1), "smallest is -1"),
    "a single class": (lambda d: _labels(d, np.zeros_like), "one class"),
    "text pixels": (lambda d: {"x_train": np.full((len(d.train), 8, 8), "a")}, "holds <U1"),
}


@pytest.mark.parametrize("case", NPZ_REFUSED)
def test_npz_mistakes_are_one_line_errors_that_say_what_to_do(tmp_path, case):
    change, needle = NPZ_REFUSED[case]
    spec = digits_npz(tmp_path / "d.npz", **change(load(DataConfig())))
    runs = tmp_path / "runs"
    with pytest.raises(engine.ConfigError) as info:
        engine.run(quick(**{"data.dataset": spec}), runs_dir=runs)
    message = str(info.value)
    assert info.value.field == "data.dataset" and needle in message and "\n" not in message, message
    assert nothing_stored(runs)


def test_a_file_that_is_not_an_npz_archive_says_so(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("x_train,y_train\n")
    one = tmp_path / "one.npz"
    np.save(one, np.zeros(3))  # np.save of a single array (a .npy, whatever its name)
    (tmp_path / "one.npz.npy").rename(one)
    for path in (text, one):
        with pytest.raises(engine.ConfigError, match="not an .npz archive"):
            load(DataConfig(dataset=f"npz:{path}"))


# ---------------------------------------------------------------- own data: text:PATH
ROWS = [{"text": f"a sentence about {'cats' if i % 2 else 'dogs'} number {i}", "label": i % 2} for i in range(20)]


def jsonl(path, rows=ROWS, *, encoding="utf-8", between="\n"):
    path.write_bytes(between.join(json.dumps(r, ensure_ascii=False) for r in rows).encode(encoding))
    return path


def test_jsonl_with_blank_lines_or_a_byte_order_mark_is_read(tmp_path):
    from engine.text import read_user_texts

    plain = read_user_texts(str(jsonl(tmp_path / "a.jsonl")))
    assert read_user_texts(str(jsonl(tmp_path / "b.jsonl", between="\n\n  \n"))) == plain
    assert read_user_texts(str(jsonl(tmp_path / "c.jsonl", encoding="utf-8-sig"))) == plain  # Notepad's UTF-8


JSONL_REFUSED = {  # (row 4 changed, encoding) -> what the one line says
    "no label": ({"text": "a dog"}, "utf-8", "line 4 needs a \"text\" string and an integer \"label\""),
    "a class name as label": ({"text": "a dog", "label": "dog"}, "utf-8", "line 4"),
    "a float label": ({"text": "a dog", "label": 1.0}, "utf-8", "line 4"),
    "latin-1": ({"text": "un caf\u00e9 cr\u00e8me", "label": 1}, "latin-1", "line 4 is not UTF-8"),
}


@pytest.mark.parametrize("case", JSONL_REFUSED)
def test_jsonl_mistakes_name_their_line(tmp_path, case):
    from engine.text import read_user_texts

    row, encoding, needle = JSONL_REFUSED[case]
    path = jsonl(tmp_path / "t.jsonl", ROWS[:3] + [row] + ROWS[4:], encoding=encoding)
    with pytest.raises(engine.ConfigError) as info:
        read_user_texts(str(path))
    assert info.value.field == "data.dataset" and needle in str(info.value), str(info.value)


def test_jsonl_with_a_split_on_some_lines_only_is_refused(tmp_path):
    """A split on every line is used as given, on none a fixed 20% is held out; on some only, the given ones were
    silently replaced by the fixed split."""
    from engine.text import read_user_texts

    rows = [dict(r, split="test" if i < 5 else "train") for i, r in enumerate(ROWS)]
    tr_x, tr_y, te_x, te_y = read_user_texts(str(jsonl(tmp_path / "all.jsonl", rows)))
    assert te_x == [r["text"] for r in ROWS[:5]]
    del rows[7]["split"]
    with pytest.raises(engine.ConfigError, match="line 8 has no \"split\""):
        read_user_texts(str(jsonl(tmp_path / "some.jsonl", rows)))


def test_text_npz_reads_byte_strings_as_utf8_and_refuses_numbers(tmp_path):
    """np.array of bytes became the texts "b'a cat'"; an array of numbers became "0", "1", ... silently."""
    from engine.text import read_user_texts

    labels = dict(y_train=np.array([0, 1, 0, 1]), y_test=np.array([0, 1]))
    texts = ["a cat", "a dog", "two cats", "café"], ["one cat", "one dog"]
    np.savez(tmp_path / "bytes.npz", text_train=np.array([t.encode() for t in texts[0]]),
             text_test=np.array([t.encode() for t in texts[1]]), **labels)
    assert read_user_texts(str(tmp_path / "bytes.npz"))[0] == texts[0]
    np.savez(tmp_path / "numbers.npz", text_train=np.arange(4), text_test=np.arange(2), **labels)
    with pytest.raises(engine.ConfigError, match=r"text_train holds int64 values of shape \(4,\); it must hold strings"):
        read_user_texts(str(tmp_path / "numbers.npz"))


class BagOfWords(nn.Module):
    """An own text model: token ids (N, L) -> a bag of embeddings -> logits."""

    def __init__(self):
        super().__init__()
        self.emb = nn.EmbeddingBag(30522, 8)  # MiniLM's vocabulary: the ids the texts are tokenised into
        self.hidden = nn.Linear(8, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, ids):
        return self.out(torch.relu(self.hidden(self.emb(ids))))


def test_an_own_module_trains_on_own_texts(tmp_path, text_cache):
    """Text data pairs with a transformer in the config (its tokenizer reads the texts); with model= that name is
    allowed and unused: the module gets the token ids."""
    cfg = quick(**{"data.dataset": f"text:{jsonl(tmp_path / 't.jsonl')}", "model.model": "bert-tiny",
                   "train.batch_size": 4})
    torch.manual_seed(0)
    s = engine.run(cfg, runs_dir=tmp_path / "runs", model=BagOfWords())
    assert s["status"] == "completed" and s["run_id"].startswith("imp-bagofwords-text-")
    with pytest.raises(engine.ConfigError, match="model.width"):
        engine.run(cfg.replace(**{"model.width": 0.5}), runs_dir=tmp_path / "runs", model=BagOfWords())
