"""Panel widgets generated from the engine's settings (engine.settings): the launch panel's run settings,
and the options dataclasses of compare, probe and analyze. Defaults, help and choices come from the
dataclass only, so the CLI's flags and the app's widgets never disagree.
"""
from __future__ import annotations

import panel as pn

from engine.settings import Setting, build, settings_of


def widget_for(s: Setting, **style):
    """The Panel widget for one setting: labelled by its name, its help as the tooltip, stretched to the
    width available unless `style` (widget parameters: width, label, placeholder...) says otherwise."""
    label = style.pop("label", s.name.replace("_", " "))
    common = dict(label=label, description=s.help, **(style or {"sizing_mode": "stretch_width"}))
    if s.type is tuple and s.choices:
        return pn.widgets.MultiChoice(options=s.choices, value=list(s.default), **common)
    if s.choices and s.path == "data.dataset":  # registry names, or any npz:PATH typed in
        return pn.widgets.AutocompleteInput(options=[c for c in s.choices if c != "npz:PATH"], value=s.default,
                                            restrict=False, min_characters=0, **common)
    if s.choices:
        return pn.widgets.Select(options=s.choices, value=s.default, **common)
    if s.type is bool:
        return pn.widgets.Checkbox(value=s.default, label=label, **{k: v for k, v in common.items()
                                                                    if k not in ("label", "description")})
    if s.type is int and not s.nullable:
        return pn.widgets.IntInput(value=s.default, **common)
    if s.type is float and not s.nullable:
        return pn.widgets.FloatInput(value=s.default, **common)
    return pn.widgets.TextInput(value="" if s.default is None else s.format(s.default), **common)


def widget_value(widget):
    """A widget's value as a setting takes it (lists from multi-choices become tuples; text is parsed later)."""
    v = widget.value
    return tuple(v) if isinstance(v, list) else v


class OptionsForm:
    """One widget per field of an options dataclass; `options()` builds (and so validates) the dataclass.

        form = OptionsForm(CompareOptions, densities={"width": 160})
        pn.Row(*form.widgets.values())
        opts = form.options()          # ConfigError naming the field, the value and what is allowed
    """

    def __init__(self, cls, style: dict | None = None, widgets: dict | None = None, **styles):
        """`style`: widget parameters for every field; `styles`: per field (by name), over `style`;
        `widgets`: ready-made widgets for some fields (a Select of stored runs for a run id)."""
        self.cls = cls
        self.settings = {s.name: s for s in settings_of(cls)}
        self.widgets = {name: (widgets or {}).get(name) or widget_for(s, **{**(style or {}), **styles.get(name, {})})
                        for name, s in self.settings.items()}

    def __getitem__(self, name: str):
        return self.widgets[name]

    def values(self) -> dict:
        """{field: value or text}; a blank text box of a field that may be None is None ("not set")."""
        out = {name: widget_value(w) for name, w in self.widgets.items()}
        return {name: None if self.settings[name].nullable and isinstance(v, str) and not v.strip() else v
                for name, v in out.items()}

    def options(self, values: dict | None = None):
        """The options dataclass from the widgets (or from `values`, e.g. the widgets' values amended)."""
        return build(self.cls, self.values() if values is None else values)
