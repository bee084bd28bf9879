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
