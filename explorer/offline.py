"""Offline resources: every view of the explorer loads its scripts and stylesheets from this machine.

By default Panel, HoloViews and Bokeh point a notebook's outputs at CDNs (BokehJS from cdn.bokeh.org, Panel's
JS and its theme stylesheets from cdn.holoviz.org); behind a firewall, or on a train, every plot is blank.
This module is the one place that says "inline everything", for JupyterLab 4 and Notebook 7 alike (both
render outputs with the same JupyterLab machinery):

- `pn.config.inline` (`pn.extension(inline=True)`): `pn.extension` publishes BokehJS, Panel's JS and the
  extensions' bundles (Tabulator…) into the notebook instead of script tags to the CDN; Panel views inline
  their stylesheets on first render and on every later update;
- `hv.extension.inline` (the default of HoloViews' notebook extension), so that a later
  `hv.extension("bokeh")` call in the notebook loads the inline bundle too;
- HoloViews objects shown by themselves (a cell ending in a plot) are drawn by HoloViews' own display hook,
  which leaves Panel's stylesheets (theme, loading spinner, layout) on the CDN whatever the setting: they
  are shown through Panel's notebook rendering instead, which inlines them.

The served app (`lottery serve`) gets its scripts and stylesheets from its own server; the one outside
request left was the Open Sans font of Panel's Fast design (the FastListTemplate's), from
fonts.googleapis.com: the app's template uses `Fast` below, the same design without it (text falls back to
the browser's sans-serif). Standalone pages (`lottery report`) are written by `save_html`, which inlines
the stylesheets that Panel's own `save(resources=INLINE)` leaves on the CDN. `without_mathjax()` keeps
the served page's largest script (MathJax) off the first page.

Importing `explorer.plots` (which every view does) calls `load_bokeh()`: in a notebook kernel that is
`setup_notebook()`, so a notebook that forgets the setup call still renders offline; elsewhere (a server,
a script) it only loads HoloViews' Bokeh backend.
"""
from __future__ import annotations

import sys

import panel as pn
from bokeh.document import Document
from bokeh.models import UIElement
from bokeh.resources import INLINE
from panel.io.notebook import patch_inline_stylesheets

# HoloViews is imported inside the functions that need it: the served app's first page draws no HoloViews
# plot and does not import it (tests/test_first_page_modules.py).

# (the kernel's execution count, the extensions) of setup_notebook()'s last loading in this kernel
_notebook_ready: tuple[int | None, set[str]] | None = None


def setup_notebook(*extensions: str) -> None:
    """Load the explorer's views into this notebook so they render with no network: call it once, first.

        from explorer.offline import setup_notebook
        setup_notebook()                 # or setup_notebook("tabulator") for Panel extensions a notebook uses

    It loads BokehJS, Panel's JS and the named Panel extensions inline (into the notebook, about 3 MB),
    then HoloViews' Bokeh backend, and shows HoloViews objects through Panel so that their stylesheets are
    inlined too. Every teaching notebook's first code cell calls it; a new notebook does the same, and its
    plots and `ExplorerApp(...)` then render in JupyterLab 4 or Notebook 7 without reaching any CDN
    (checked by tests/test_jupyter_offline.py in a browser that blocks every request leaving 127.0.0.1).
    """
    global _notebook_ready
    cell = _execution_count()
    loaded = _notebook_ready[1] if _notebook_ready is not None and _notebook_ready[0] == cell else None
    if loaded is not None and set(extensions) <= loaded:
        return  # done in this cell already (importing explorer.plots does it): not ~3 MB more of the cell's output
    # (a cell run again loads again: the page may have been reloaded since, without the earlier output)
    import holoviews as hv
    from holoviews.core.dimension import LabelledData
    from panel.io.notebook import load_notebook

    if getattr(hv.extension, "_loaded", False):
        # Loaded in this kernel before: Panel and HoloViews then send only a small "reloading" bundle, assuming
        # the page still holds BokehJS. A page reloaded (or the notebook opened in a new tab) on the same kernel
        # does not, and every plot of Run All stayed blank: send BokehJS in full, before their bundles.
        load_notebook(inline=True)
    hv.extension.inline = True  # a later hv.extension("bokeh") call (the notebook's own) inlines too
    pn.extension(*extensions, inline=True)
    hv.extension("bokeh", inline=True, logo=False)
    hv.Store.set_display_hook("html+js", LabelledData, _show_through_panel)
    _notebook_ready = (cell, (loaded or set()) | set(extensions))


def _show_through_panel(obj):
    """HoloViews' html+js display hook, drawn by Panel's notebook rendering (stylesheets inlined)."""
    import holoviews as hv

    if "html" not in hv.Store.display_formats:
        return None  # the notebook asked HoloViews for png/svg instead
    return pn.panel(obj)._repr_mimebundle_()


class Fast(pn.theme.Fast):
    """Panel's Fast design without its web font (the only resource it fetches from outside)."""

    # Same class name as Panel's: Panel resolves a design's bundled files under its lower-cased class name
    _resources = {kind: files for kind, files in pn.theme.Fast._resources.items() if kind != "font"}

    _modifiers: dict = {}  # (component type, theme type, served, isolated) -> Panel's modifiers for it

    @classmethod
    def _get_modifiers(cls, viewable, theme=None, isolated=True):
        """Panel 1.9's, computed once per component type. Panel recomputes them for every model it renders
        or updates, each time resolving the theme's two stylesheet paths (param Filename lookups: os.path
        checks over search paths), about a third of the event loop's time when four pages render at once
        (bench/load_sessions.py). They depend only on the component's type and the theme's (whose
        stylesheets the explorer never changes), so the cache returns a copy of the first answer."""
        from panel.io.state import state

        served = bool(state.curdoc and state.curdoc.session_context) and not state._is_pyodide
        key = (type(viewable), type(theme) if isinstance(theme, pn.theme.Theme) else theme, served, isolated)
        if key not in cls._modifiers:
            cls._modifiers[key] = super()._get_modifiers(viewable, theme, isolated)
        modifiers, child_modifiers = cls._modifiers[key]
        return dict(modifiers), child_modifiers


def save_html(page: pn.viewable.Viewable, path, title: str) -> None:
    """Write `page` as one HTML file that opens from disk with no network: scripts and stylesheets inline."""
    doc = Document()
    root = page.get_root(doc)
    for model in root.select({"type": UIElement}):
        patch_inline_stylesheets(model)  # Panel's CDN stylesheet links -> the same files' contents
    doc.add_root(root)
    # app_favicon/apple_icon: Panel's page template links its icons on the CDN unless they are given
    pn.io.save.save(doc, str(path), resources=INLINE, title=title,
                    template_variables={"app_favicon": "data:,", "apple_icon": "data:,"})


def without_mathjax() -> None:
    """Served pages leave out BokehJS's MathJax bundle (1.8 MB, the largest of the page's scripts).

    Since Panel 1.9 (holoviz/panel#8424) any page holding a Markdown or HTML pane loads it, in case the
    text holds LaTeX; the explorer's text holds none, and parsing it was about a third of the first page's
    script time (bench/serve_latency.py). Panel has no setting for it: its check is replaced, for this
    process. A pane that does need LaTeX brings it back with `pn.extension("mathjax")`.
    """
    from panel.io import resources

    resources._panel_use_mathjax = lambda roots: False


def load_bokeh() -> None:
    """HoloViews' Bokeh backend for the explorer's plots; in a notebook kernel, with `setup_notebook()`."""
    if _in_notebook():
        if _notebook_ready is None:  # (an import in a later cell than the notebook's own call loads nothing again)
            setup_notebook()
    else:
        import holoviews as hv

        hv.extension("bokeh", logo=False)


def _shell():
    ipython = sys.modules.get("IPython")  # not imported: certainly no kernel (and no import cost for a server)
    return ipython.get_ipython() if ipython is not None else None


def _execution_count() -> int | None:
    """The running cell's number in this kernel (None outside IPython)."""
    return getattr(_shell(), "execution_count", None)


def _in_notebook() -> bool:
    return hasattr(_shell(), "kernel")
