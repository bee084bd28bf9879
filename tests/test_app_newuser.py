"""The newer tabs (Stability, Weight space, Bayesian) as a new user meets them, without a browser: the wrong
kind of run chosen, a run deleted or damaged while the tab shows it, Cancel in the middle of a job. Each test
is a bug a user saw; the docstring says what they saw."""
import shutil

import holoviews as hv
import pytest

import engine
from engine import zoo as Z

from conftest import tiny, wait_until


def _texts(element) -> str:
    """What an empty plot (explorer.plots._empty) says, '' for a plot with data."""
    return " ".join(e.data if isinstance(e.data, str) else str(e.text) for e in element.traverse(lambda x: x)
                    if isinstance(e, hv.Text))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A 4-member zoo of tiny MLPs (seconds)."""
    runs_dir = tmp_path_factory.mktemp("zoo") / "runs"
    options = Z.ZooOptions(members=4)
    values = {"model.model": "mlp", "model.hidden": (8,), "train.epochs": 1, "train.batch_size": 100,
              "train.optimizer": "sgd", "train.lr": 0.05, "device": "cpu"}
    return runs_dir, Z.train_zoo(options, Z.zoo_config(options, values, runs_dir=runs_dir), runs_dir=runs_dir)["run_id"]


# ---------------------------------------------------------------- Weight space
def test_the_weight_space_tab_generates_with_lottery_generates_defaults(zoo):
    """The tab's form said 1000 flow steps where `lottery generate`, the notebook and the README's measured
    figures use 3000: a generation made in the app was not the one `lottery generate ZOO_ID` finds again."""
    from engine.generate import GenerateOptions
    from explorer.weight_space import WeightSpacePanel

    panel = WeightSpacePanel(zoo[0])
    assert panel.gen_form.options() == GenerateOptions()


def test_barriers_of_a_zoo_deleted_while_shown_say_so(zoo, tmp_path):
    """The zoo's folder was deleted while the tab showed it; Barriers raised TypeError in the click handler
    and the page said nothing."""
    from explorer.weight_space import WeightSpacePanel

    runs_dir = tmp_path / "runs"
    shutil.copytree(zoo[0], runs_dir)
    panel = WeightSpacePanel(runs_dir)
    assert panel.zoo.value == zoo[1]
    shutil.rmtree(runs_dir / zoo[1])
    panel.barriers()
    assert panel.job is None
    assert zoo[1] in panel.status.object and "no longer" in panel.status.object


def test_barriers_of_a_zoo_damaged_while_shown_say_so(zoo, tmp_path):
    """The zoo's weights went missing while the tab showed it: its summary now says the zoo is damaged, which
    escaped the click handler."""
    from explorer.weight_space import WeightSpacePanel

    runs_dir = tmp_path / "runs"
    shutil.copytree(zoo[0], runs_dir)
    panel = WeightSpacePanel(runs_dir)
    (runs_dir / zoo[1] / "weights.safetensors").unlink()
    panel.barriers()
    assert panel.job is None and "weights.safetensors" in panel.status.object


def test_cancel_stops_barriers_and_stores_nothing(zoo, tmp_path):
    """Cancel was enabled while Barriers ran but did nothing: the barriers ran to the end and were stored."""
    from explorer.weight_space import WeightSpacePanel

    runs_dir = tmp_path / "runs"
    shutil.copytree(zoo[0], runs_dir)
    panel = WeightSpacePanel(runs_dir)
    panel.barriers()
    assert panel.job is not None and not panel.cancel.disabled
    panel.cancel.clicks += 1
    wait_until(lambda: panel.poll() or panel.job is None, what="barriers stop")
    assert "cancelled" in panel.status.object, panel.status.object
    assert "zoo-barrier" not in engine.RunStore(runs_dir, zoo[1]).analyses()


# ---------------------------------------------------------------- Bayesian
@pytest.fixture(scope="module")
def deterministic(tmp_path_factory):
    """A deterministic run with an uncertainty record (`lottery analyze RUN_ID uncertainty`)."""
    from engine.analysis import analyze

    runs_dir = tmp_path_factory.mktemp("det") / "runs"
    cfg = tiny(**{"model.model": "mlp", "model.hidden": (8,), "train.epochs": 1, "prune.levels": 1,
                  "prune.controls": ()})
    run_id = engine.run(cfg, runs_dir=runs_dir)["run_id"]
    analyze("uncertainty", runs_dir, run_id)
    return runs_dir, run_id


def test_the_bayesian_tab_says_a_deterministic_run_has_no_sigma(deterministic):
    """A deterministic run with an uncertainty record is listed; its sigma map said 'choose a Bayesian run, a
    level and a layer' while a run, a level and a layer were chosen."""
    from explorer.bayes import BayesPanel

    runs_dir, run_id = deterministic
    panel = BayesPanel(runs_dir)
    assert panel.run.value == run_id and panel.layer.value
    said = _texts(panel.panes["sigma"].object)
    assert "deterministic" in said and "choose" not in said, said
    assert isinstance(panel.panes["mask"].object, hv.Image)  # its mask is still drawn


def test_the_bayesian_tab_survives_a_level_deleted_while_shown(deterministic, tmp_path):
    """A run's level files deleted while the tab showed it: choosing another level or refreshing raised
    FileNotFoundError in the widget's watcher (the tab stopped drawing)."""
    from explorer.bayes import BayesPanel

    runs_dir = tmp_path / "runs"
    shutil.copytree(deterministic[0], runs_dir)
    run_id = deterministic[1]
    panel = BayesPanel(runs_dir)
    shutil.rmtree(runs_dir / run_id / "levels")
    panel.level.value = 0
    said = _texts(panel.panes["mask"].object)
    assert "could not be read" in said and "level 0" in said, said
    panel.refresh()
    assert "could not be read" in _texts(panel.panes["sigma"].object)


# ---------------------------------------------------------------- Stability
STORY = {"model.model": "lenet300", "data.dataset": "digits", "train.epochs": 1, "train.batch_size": 128,
         "prune.levels": 8, "prune.rewind": "iter:1", "prune.controls": ("reinit",), "device": "cpu"}


def test_stopping_the_story_shows_progress_stops_at_once_and_keeps_what_is_stored(tmp_path):
    """The status said only 'running the story...' while its IMP runs trained (hours at the preset's size);
    Stop during the first run went on to the next run (engine.runner.run returns a cancelled run's summary
    and story.run_story does not look) and ended with 'has no completed ticket level 0', one more empty run
    in the store."""
    from explorer.stability import StabilityPanel

    runs_dir = tmp_path / "runs"
    panel = StabilityPanel(runs_dir, overrides=STORY)
    # an empty store: each plot says what to do in this tab (the interpolation plot said 'Analyze → instability',
    # the Analyses tab's button)
    assert all("Run the preset" in _texts(pane.object) for pane in panel.panes.values() if pane is not
               panel.panes["tickets"])
    panel.start()
    wait_until(lambda: panel.poll() or "level" in panel.status.object, timeout=120, what="training progress shown")
    assert "init" in panel.status.object and "1/3" in panel.status.object, panel.status.object
    panel.cancel_button.clicks += 1
    wait_until(lambda: panel.poll() or panel.job is None, timeout=120, what="the story stops")
    assert "stopped" in panel.status.object and "kept" in panel.status.object, panel.status.object
    assert "completed ticket level" not in panel.status.object
    runs = engine.list_runs(runs_dir)
    assert [r["status"] for r in runs] == ["cancelled"], runs
    assert not panel.button.disabled and panel.cancel_button.disabled


# ---------------------------------------------------------------- run selects
def _shows_whole_ids(select) -> bool:
    """A Select as wide as the page, or wide enough for its longest option (~8 px a character at the app's
    font): run ids differ only in their last characters (the config hash)."""
    longest = max((len(str(o)) for o in select.labels), default=0)
    return select.sizing_mode == "stretch_width" or (select.width or 300) >= 8 * longest + 40


def test_the_transformer_tabs_run_selects_show_whole_run_ids(tmp_path):
    """The Foundation models and Embedding & adapter tickets tabs' run selects were 300 px wide: a run id such
    as ks-lottery-bert-tiny-pydoctopicsexpanded-b77a732a59 was cut before its hash, so runs of one method on
    one task (three partial-lora rules) could not be told apart."""
    from explorer.foundation import FoundationPanel
    from explorer.foundation_ii import EmbeddingTicketsPanel

    f, e = FoundationPanel(tmp_path), EmbeddingTicketsPanel(tmp_path)
    ids = ["ks-lottery-bert-tiny-pydoctopicsexpanded-b77a732a59", "partial-lora-bert-tiny-pydoctopics-0312aa9cf4"]
    for select in (f.run, e.run, e.lora_run):
        select.options = ids  # what a store of those runs lists
        assert _shows_whole_ids(select), select.name


def test_a_story_run_deleted_while_shown_is_dropped_not_raised(tmp_path):
    """One of a story's runs deleted while the Stability tab showed the story: redrawing it (choosing the story
    again, the app's refresh of the visible tab) raised FileNotFoundError from the story's reads."""
    from engine.analysis import story
    from explorer.stability import StabilityPanel

    runs_dir = tmp_path / "runs"
    ids = story.run_story(runs_dir, "stability-story", seeds=(0,), points=3, ticket_levels=(),
                          **{**STORY, "prune.levels": 1})
    panel = StabilityPanel(runs_dir)
    shutil.rmtree(runs_dir / ids[0])  # the init run
    panel.draw()
    assert "re-read" in panel.status.object, panel.status.object
    assert len(panel.groups[panel.story.value]) == 2  # the other two rewinds are still a story
    assert not _texts(panel.panes["barriers"].object)  # ... drawn


# ---------------------------------------------------------------- records of an unexpected shape
def test_a_record_of_an_unexpected_shape_is_named_and_the_tab_still_opens(deterministic, tmp_path):
    """A stored record that reads as JSON but lacks a key the tab draws (another version's, edited by hand)
    made the whole tab fail to open ('The Bayesian tab failed to open: KeyError: ...'); the Embedding & adapter
    tickets tab the same for a ks-lottery or partial-lora record. Each tab now draws the others and names it."""
    from explorer.bayes import BayesPanel
    from explorer.foundation_ii import EmbeddingTicketsPanel

    runs_dir = tmp_path / "runs"
    shutil.copytree(deterministic[0], runs_dir)
    run_id = deterministic[1]
    store = engine.RunStore(runs_dir, run_id)
    good = store.analyses()["uncertainty"]
    other = engine.run(tiny(**{"model.model": "mlp", "model.hidden": (8,), "train.epochs": 1, "prune.levels": 1,
                               "prune.controls": (), "seed": 1}), runs_dir=runs_dir)["run_id"]
    engine.RunStore(runs_dir, other).save_analysis("uncertainty", {**good, "levels": [{"level": 0}]})
    for name in ("ks-lottery", "partial-lora"):
        store.save_analysis(name, {"levels": []})

    bayes = BayesPanel(runs_dir)
    assert list(bayes.results) == [run_id]  # the readable one, drawn
    assert other in bayes.note.object and "uncertainty" in bayes.note.object
    tickets = EmbeddingTicketsPanel(runs_dir)
    assert tickets.run.options == [] and tickets.lora_run.options == []
    assert run_id in tickets.note.object and "ks-lottery" in tickets.note.object


def test_a_cancelled_zoo_says_what_is_kept_and_how_to_resume(tmp_path):
    """Cancel during Train zoo said 'zoo X cancelled: 2 members, median test accuracy 0.283', as if the zoo had
    2 members (it had 8; the 2 trained are kept, and the zoo list shows completed zoos only)."""
    from explorer.weight_space import WeightSpacePanel

    panel = WeightSpacePanel(tmp_path / "runs")
    panel.zoo_form["members"].value, panel.zoo_form["chunk"].value = 8, 2
    for path, value in {"model.hidden": "8", "train.epochs": 2}.items():
        panel.zoo_settings[path].value = value
    panel.train_zoo()
    panel.cancel.clicks += 1
    wait_until(lambda: panel.poll() or panel.job is None, what="the zoo stops")
    assert "cancelled" in panel.status.object and "of 8 members" in panel.status.object, panel.status.object
    assert "Train zoo again resumes" in panel.status.object


def test_the_ipywidgets_launcher_shows_a_bad_value_as_typed(tmp_path):
    """The classic-notebook launcher put the error into HTML as it was: a value typed with '<' (model.hidden
    '<b>1,2') turned the rest of the message bold and hid what was typed."""
    from explorer.widgets import Launcher

    launcher = Launcher(tmp_path / "runs")
    launcher.fields["model.model"].value = "mlp"  # (--hidden is the mlp's: lenet300 never reads it)
    launcher.fields["model.hidden"].value = "<b>1,2"
    assert launcher.launch() is None
    assert "model.hidden: '&lt;b&gt;1,2' is not valid" in launcher.status.value


def test_a_bad_value_with_markup_reads_as_typed_in_the_weight_space_status(tmp_path):
    """The tab's status is Markdown, which passes HTML through: hidden typed as '<b>1,2' showed the rest of
    the error in bold without what was typed."""
    from explorer.weight_space import WeightSpacePanel

    panel = WeightSpacePanel(tmp_path / "runs")
    panel.zoo_settings["model.hidden"].value = "<b>1,2"
    panel.train_zoo()
    assert panel.job is None and "'&lt;b&gt;1,2' is not valid" in panel.status.object, panel.status.object


def test_the_story_accuracy_plot_keeps_its_legend_off_the_curves(tmp_path):
    """Six curves (three rewinds, ticket and reinit) and their legend inside the plot's lower left corner,
    where the reinit curves run: the legend hid them, and the title was cut off at half the page's width."""
    from bokeh.models import Legend

    from explorer.stability import accuracy_plot

    rows = [{"run_id": "r", "rewind": rewind, "rewind_kind": rewind.split(":")[0], "seed": 0, "variant": variant,
             "level": level, "density": 0.8 ** level, "test_accuracy": 0.9, "barrier": None}
            for rewind in ("init", "iter:20", "lr") for variant in ("ticket", "reinit") for level in (1, 2)]
    plot = accuracy_plot(rows)
    figure = hv.render(plot)
    assert any(isinstance(r, Legend) for r in figure.right) and not any(isinstance(r, Legend) for r in figure.center)
    assert len(plot.opts.get().kwargs["title"]) <= 60


def test_the_foundation_level_slider_is_off_without_levels_to_choose(tmp_path):
    """With no transformer run the Foundation models tab showed a live 'Level' slider from 0 to 1 that
    moved and drew nothing."""
    from explorer.foundation import FoundationPanel

    panel = FoundationPanel(tmp_path)
    assert panel.level.disabled


# ---------------------------------------------------------------- a tab's panel on its own (notebooks 05, 09)
def _until_job_ends(panel, timeout=60) -> None:
    """Let the event loop run (as a notebook kernel's does) until the panel's job has ended; nobody calls
    panel.poll() here."""
    import asyncio
    import time

    async def wait():
        deadline = time.monotonic() + timeout
        while panel.job is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def main(start):
        start()  # a button's click, on the kernel's running loop
        await wait()

    return main


def test_a_weight_space_panel_shown_inline_follows_its_own_job(zoo, tmp_path):
    """Notebook 05 shows WeightSpacePanel inline and says its buttons train, compute barriers and generate;
    only the app's tick ever called poll(), so inline a pressed button said 'running...' for ever."""
    import asyncio

    from explorer.weight_space import WeightSpacePanel

    runs_dir = tmp_path / "runs"
    shutil.copytree(zoo[0], runs_dir)
    panel = WeightSpacePanel(runs_dir)
    asyncio.run(_until_job_ends(panel)(panel.barriers))
    assert panel.job is None and "barriers stored" in panel.status.object, panel.status.object


def test_a_stability_panel_shown_inline_follows_its_own_job(tmp_path):
    """Notebook 09 shows StabilityPanel inline ('its button runs the preset's story'): the same, for ever
    'running the story...'."""
    import asyncio

    from explorer.stability import StabilityPanel

    panel = StabilityPanel(tmp_path / "runs", overrides={**STORY, "prune.levels": 1})
    asyncio.run(_until_job_ends(panel)(panel.start))
    assert panel.job is None and "stored" in panel.status.object, panel.status.object
