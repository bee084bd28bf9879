"""Analyses of the model's prunable-weight masks on runs whose tickets mask other tensors: partial-lora masks
adapter entries (merged into plain weights when stored), ks-lottery token-embedding rows. persistence and
earlybird-replay read a ticket's mask as one over the model's Linear weights: on these runs they are a
one-line refusal naming the run (they raised a bare KeyError, or compared level 0's encoder with the
tickets' embedding matrix), and nothing is stored."""
import pytest

import engine
from engine.errors import ConfigError

pytestmark = pytest.mark.usefixtures("text_cache")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    runs = tmp_path_factory.mktemp("adapter-analyses")
    base = {"model.model": "bert-tiny", "train.epochs": 1, "train.batch_size": 32, "device": "cpu"}
    lora = engine.RunConfig().replace(**base, **{"data.dataset": "pydoc-topics", "prune.method": "partial-lora",
                                                 "prune.lora_rank": 4, "prune.density": 0.25})
    ks = engine.RunConfig().replace(**base, **{"data.dataset": "pydoc-topics-expanded", "prune.method": "ks-lottery",
                                               "prune.scope": "global", "prune.ks_top_k": (4,),
                                               "prune.ks_baselines": False})
    return runs, [engine.run(c, runs_dir=runs)["run_id"] for c in (lora, ks)]


@pytest.mark.parametrize("analysis", ["persistence", "earlybird-replay"])
@pytest.mark.parametrize("which", [0, 1], ids=["partial-lora", "ks-lottery"])
def test_refused_in_one_line_and_nothing_stored(stored, analysis, which):
    runs, ids = stored
    run_id = ids[which]
    with pytest.raises(ConfigError) as e:
        engine.analysis.analyze(analysis, runs, run_id)
    message = str(e.value)
    assert e.value.field == "RUN_ID" and run_id in message and analysis in message and "\n" not in message
    assert ("partial-lora", "ks-lottery")[which] in message
    assert not engine.store.RunStore(runs, run_id).analysis_path(analysis).exists()
