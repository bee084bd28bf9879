"""Text a person reads: a run's summary table and its stored analyses, for `lottery show`, `lottery run`,
`lottery analyze` and the explorer (which may import this module: it imports neither torch nor a UI).

Each analysis formats its own results (AnalysisSpec.format, in its module); `format_analysis` finds it
through the registry by the "analysis" value a stored result carries.
"""
from __future__ import annotations

from .registry import ANALYSES


def pct(x) -> str:
    """0.1234 -> " 12.34%" (None -> "-")."""
    return "-" if x is None else f"{100 * x:6.2f}%"


def format_summary(s: dict) -> str:
    if s.get("kind") == "zoo":  # a model zoo (engine.zoo) summarises its members, it has no levels
        from .zoo import format_zoo
        return format_zoo(s)
    lines = [f"run {s['run_id']}  {s['status']}  ({s['method']}: {s['model']} on {s['dataset']}, seed {s['seed']}, "
             f"{s.get('device', '?')})"]
    if s.get("error"):
        lines.append(f"error: {s['error']}")
    controls = list(s.get("controls", {}))
    head = f"{'level':>5}  {'density':>8}  {'test acc':>8}  {'val acc':>8}  {'early stop':>10}  {'seconds':>7}"
    width = {c: max(11, len(c + " stop")) for c in controls}  # start-magnitude's headers are wider than 11
    head += "".join(f"  {c + ' acc':>{width[c]}}  {c + ' stop':>{width[c]}}" for c in controls)
    lines.append(head)
    by_level = {c: {r["level"]: r for r in s["controls"][c]} for c in controls}
    rows = ([s["dense"]] if s.get("dense") else []) + s.get("levels", [])
    for r in rows:
        name = "dense" if r["level"] == 0 else str(r["level"])
        line = (f"{name:>5}  {pct(r['density']):>8}  {pct(r['test_accuracy']):>8}  {pct(r['val_accuracy']):>8}  "
                f"{r['early_stop_iteration']:>10}  {r['train_seconds']:>7.2f}")
        for c in controls:
            cr = by_level[c].get(r["level"])
            line += (f"  {pct(cr and cr['test_accuracy']):>{width[c]}}  "
                     f"{(cr['early_stop_iteration'] if cr else '-'):>{width[c]}}")
        lines.append(line)
    return "\n".join(lines)


def format_analysis(name: str, result: dict) -> str:
    """One or a few lines for a stored analysis; the JSON holds the curves and matrices."""
    kind = result.get("analysis", name)
    if kind not in ANALYSES.names():
        return f"{name}: stored"
    return ANALYSES.get(kind, "analysis").format(name, result)
