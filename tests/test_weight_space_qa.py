"""New-user QA of the weight-space features (zoos, generations, the Weight space tab): what a first try found."""


def test_show_of_a_generation_id_held_by_several_zoos_names_each(tmp_path, capsys):
    """A generation's id hashes its options, not its zoo: the same `lottery generate` options on two zoos give two
    generations of one id. `lottery show GEN_ID` named only the first zoo it found, as if it were the only one."""
    from engine.cli import main

    for zoo in ("zoo-mlp-digits-0123456789", "zoo-mlp-digits-abcdef0123"):
        (tmp_path / zoo / "generations" / "gen-30c87e6f61").mkdir(parents=True)
    assert main(["show", "gen-30c87e6f61", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "zoo-mlp-digits-0123456789" in err and "zoo-mlp-digits-abcdef0123" in err, err
    assert "lottery show ZOO_ID" in err, err


def test_the_barrier_plot_says_which_curves_are_naive_and_which_re_basined():
    """The Weight space tab's barrier plot drew naive curves red and re-basined ones blue with the legend turned
    off and no word of the colours: a newcomer could not tell which was which."""
    import holoviews as hv

    from explorer.weight_space import barrier_plot

    hv.extension("bokeh")
    curve = [{"alpha": a / 4, "error": e} for a, e in zip(range(5), (0.1, 0.3, 0.5, 0.3, 0.1))]
    pair = {"a": 0, "b": 1, "naive_curve": curve, "matched_curve": [dict(p, error=p["error"] / 2) for p in curve]}
    result = {"pairs": [pair, {**pair, "a": 2, "b": 3}], "naive_error_barrier": 0.4, "matched_error_barrier": 0.15}
    figure = hv.render(barrier_plot(result))
    items = [str(item.label.value) for legend in figure.legend for item in legend.items]
    assert sorted(items) == ["naive", "re-basined"], items  # one entry per kind, not one per pair


def test_the_tabs_train_zoo_refuses_a_bad_ticket_or_level_at_once_naming_its_box(runs_dir):
    """Train zoo with a ticket level the run lacks started a job, which stopped with "--level: 9 is not valid" (a
    flag, beside a box labelled level); a ticket that is no run said "--ticket: 'nope'". Both answer at once now,
    naming the box, and nothing is stored."""
    import engine
    from explorer import weight_space as W

    from conftest import tiny

    cfg = tiny(**{"model.model": "mlp", "model.hidden": (12,), "prune.levels": 1, "prune.controls": (),
                  "prune.rewind": "iter:5", "train.epochs": 1, "train.batch_size": 100})
    ticket_run = engine.run(cfg, runs_dir=runs_dir)["run_id"]
    panel = W.WeightSpacePanel(runs_dir)
    for ticket, level, said in ((ticket_run, 9, f"**zoo**: level: 9 is not valid; completed ticket levels of run "
                                 f"{ticket_run}: [0, 1]"),
                                ("nope", None, "**zoo**: ticket: 'nope' is not valid; no such run")):
        panel.zoo_form["ticket"].value = ticket
        panel.zoo_form["level"].value = "" if level is None else str(level)
        panel.train_zoo()
        assert panel.job is None and panel.status.object.startswith(said), panel.status.object
    assert sorted(p.name for p in runs_dir.iterdir()) == [ticket_run]


def test_the_tabs_train_zoo_makes_a_family_zoo_and_refuses_families_with_a_ticket_at_once(runs_dir):
    """The zoo form is ZooOptions': --families and --spawn-step are boxes of the tab, checked like the flags."""
    from engine import zoo as Z
    from explorer import weight_space as W

    from conftest import wait_until

    panel = W.WeightSpacePanel(runs_dir)
    panel.zoo_form["ticket"].value = "some-run"
    panel.zoo_form["families"].value = "2"
    panel.train_zoo()
    assert panel.job is None and panel.status.object.startswith("**zoo**: families: 2 is not valid; applies to "
                                                                "dense zoos"), panel.status.object
    panel.zoo_form["ticket"].value = ""
    panel.zoo_form["members"].value, panel.zoo_form["spawn_step"].value = 4, 3
    for path, value in {"model.hidden": "8", "train.epochs": 1}.items():
        panel.zoo_settings[path].value = value
    panel.train_zoo()
    wait_until(lambda: panel.poll() or panel.job is None, what="the family zoo trains")
    [zoo_id] = panel.zoos()
    zoo = Z.load_zoo(runs_dir, zoo_id)
    assert (zoo.options.families, zoo.options.spawn_step) == (2, 3)
    assert [m["family"] for m in zoo.members] == [0, 1, 0, 1]
