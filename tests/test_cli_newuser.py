"""What a new user of the newer families (zoos and generations, foundation-model tickets, Bayesian tickets) runs
into on the command line: tables that line up, `lottery run` printing what `lottery show` prints, flags of
another method, output piped into `head`."""
from engine.compare import format_table


def _board(methods: list[str]) -> dict:
    rows = [{"method": m, "target_density": 0.2, "density": 0.2, "test_accuracy_mean": 0.9 - i / 100,
             "test_accuracy_std": 0.01, "seeds": 2, "search_steps": 1200.0, "search_seconds": 3.5,
             "control_deltas": {"reinit": -0.02}, "runs": [f"{m}-x"]} for i, m in enumerate(methods)]
    return {"status": "completed", "model": "bert-tiny", "dataset": "pydoc-topics", "seeds": 2,
            "densities": [0.2], "methods": methods, "rows": rows}


def test_compare_table_columns_line_up_with_long_method_names():
    """`lottery compare --methods imp,partial-lora,bayes-imp-...`: a name longer than 10 characters pushed its
    row's columns right of the header's."""
    lines = format_table(_board(["imp", "partial-lora", "ks-lottery", "a-very-long-method-name"])).splitlines()
    header, rows = lines[1], lines[2:]
    for column in ("target", "density", "search s"):
        end = header.rindex(column) + len(column)  # right-aligned columns: every row's value ends there
        for row in rows:
            assert row[end - 1] != " " and (end == len(row) or row[end] == " "), (column, header, row)
