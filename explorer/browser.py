"""The run browser: every run in the store, selection for comparison, delete with confirmation."""
from __future__ import annotations

import os

import panel as pn
import param

import engine
from engine.store import RunStore, runs_root


class RunBrowser(pn.viewable.Viewer):
    """Lists the store's runs; `selected` are the run ids the views compare (none selected = all)."""

    selected = param.List(default=[])
    summaries = param.List(default=[])

    def __init__(self, runs_dir, **params):
        super().__init__(**params)
        self.runs_dir = runs_dir
        self._table = None  # the Tabulator, built when first shown (see `table`)
        self._signature: tuple = ()  # the store as last read (see `signature`)
        self.refresh_button = pn.widgets.Button(label="Refresh", width=100)
        self.delete_button = pn.widgets.Button(label="Delete selected", color="danger", width=140)
        self.confirm_button = pn.widgets.Button(label="Yes, delete", color="danger", width=120)
        self.keep_button = pn.widgets.Button(label="Keep", width=80)
        self.confirm = pn.Row(pn.pane.Markdown("", css_classes=["confirm-text"]), self.confirm_button,
                              self.keep_button, visible=False)
        self.refresh_button.on_click(lambda _: self.refresh())
        self.delete_button.on_click(lambda _: self.ask_delete())
        self.confirm_button.on_click(lambda _: self.delete_selected())
        self.keep_button.on_click(lambda _: setattr(self.confirm, "visible", False))
        self.notice = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.refresh()

    def refresh(self) -> None:
        keep = list(self.selected)
        self._signature = self.signature()
        self.summaries = engine.list_runs(self.runs_dir)
        ids = self._ids()
        if self._table is not None:
            self._table.value = self._rows()
            self._table.hidden_columns = self._hidden(self._table.value)
            self._table.selection = [ids.index(r) for r in keep if r in ids]
        self.selected = [r for r in keep if r in ids]

    def signature(self) -> tuple:
        """What changes when a run is added, deleted or stores a level (its summary.json is replaced): the run
        folders' names with their summary's mtime. One scandir and a stat per run (~1 ms for 300 runs)."""
        try:  # (runs_root: `~` expanded, as list_runs does)
            folders = [d for d in os.scandir(runs_root(self.runs_dir))
                       if d.is_dir() and not d.name.startswith(".")]
        except (OSError, engine.ConfigError):  # no runs dir (yet), or a file in its place
            return ()
        out = []
        for d in folders:
            try:
                out.append((d.name, os.stat(os.path.join(d.path, "summary.json")).st_mtime_ns))
            except OSError:
                out.append((d.name, 0))
        return tuple(sorted(out))

    def changed_on_disk(self) -> set[str]:
        """The runs added, deleted or grown since the last refresh by something else than this page (the CLI, a
        shell, another page; empty: none): the app's tick checks every few seconds and re-reads the store then."""
        return {name for name, _ in set(self.signature()) ^ set(self._signature)}

    @property
    def table(self) -> pn.widgets.Tabulator:
        """The runs as a table (one row per summary, in order), built on first use: it needs pandas, which the
        app's first page does without (the Runs tab is built when first visited)."""
        if self._table is None:
            ids = self._ids()
            # as tall as its rows, up to 600 px (then it scrolls inside): a fixed 320 px showed 10 of 24 runs with
            # half a 1000 px window blank below, and a few runs atop an empty box
            self._table = pn.widgets.Tabulator(self._rows(), selectable="checkbox", disabled=True,
                                               show_index=False, sizing_mode="stretch_width", max_height=600,
                                               pagination=None, css_classes=["run-table"],
                                               # a note beside the id it explains, wrapped (a page 1000 px wide
                                               # shows the first four columns)
                                               formatters={"note": {"type": "textarea"}}, widths={"note": 220},
                                               selection=[ids.index(r) for r in self.selected if r in ids])
            self._table.hidden_columns = self._hidden(self._table.value)
            self._table.param.watch(self._on_select, "selection")
        return self._table

    @property
    def shown(self) -> bool:
        """Whether the table has been built (the Runs tab visited)."""
        return self._table is not None

    @staticmethod
    def _hidden(rows) -> list[str]:
        """The note column only where a run has a note (most stores: none; at 1000 px it took one of four)."""
        return [] if rows["note"].astype(bool).any() else ["note"]

    def _rows(self):
        """The table's rows (pandas: imported when the table is first shown)."""
        from .tables import comparison_notes, runs_table

        return runs_table(self.summaries, comparison_notes(self.runs_dir, self.summaries))

    def _ids(self) -> list[str]:
        return [s["run_id"] for s in self.summaries]

    def _on_select(self, event) -> None:
        ids = self._ids()
        self.selected = [ids[i] for i in event.new if i < len(ids)]

    def select(self, run_ids: list[str]) -> None:
        ids = self._ids()
        self.table.selection = [ids.index(r) for r in run_ids if r in ids]

    def chosen(self) -> list[dict]:
        """Summaries the views should show: the selection, or every run when nothing is selected."""
        if not self.selected:
            return self.summaries
        return [s for s in self.summaries if s["run_id"] in self.selected]

    def ask_delete(self) -> None:
        if not self.selected:
            self.notice.object = "Select runs to delete first."
            return
        self.confirm[0].object = f"Delete {len(self.selected)} run(s) and all their files? This cannot be undone."
        self.confirm.visible = True

    def delete_selected(self) -> None:
        """Delete the selected runs by the folder name each was listed under (`list_runs` never takes a run
        id from inside a summary); the store checks that folder is a run folder inside the runs dir."""
        self.confirm.visible = False
        listed = {s["run_id"] for s in self.summaries}
        deleted, refused = [], []
        for run_id in self.selected:
            if run_id not in listed:  # a selection this page did not offer (a forged client message)
                refused.append(f"refused {run_id!r}: not a run listed here")
                continue
            try:
                RunStore(self.runs_dir, run_id).delete()
                deleted.append(run_id)
            except engine.LotteryError as e:
                refused.append(f"refused {run_id}: {e}")
        self.notice.object = "; ".join([f"deleted {len(deleted)} run(s)"] * bool(deleted) + refused)
        self.selected = []
        self.refresh()

    def __panel__(self):
        return pn.Column(pn.Row(self.refresh_button, self.delete_button), self.confirm, self.notice, self.table,
                         sizing_mode="stretch_width")
