"""The reading room's *Advanced settings*: one widget per analysis setting, made from
``drasclr.core.settings.shell_options`` — a setting added to ``AnalysisSettings`` appears here with no code of its own.

State keys are ``setting_<name>``; :func:`settings` turns them (and the drawer's model, device and mirror choices)
into the ``AnalysisSettings`` the Logic passes to the engine.
"""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from drasclr.core.settings import TRISTATE, AnalysisSettings, shell_options

SHOWN_ELSEWHERE = {"tta"}  # the drawer's "Mirror augmentation" box
DEFAULT_TITLE = "default"


def options() -> list[dict]:
    return [o for o in shell_options(advanced=True) if o["name"] not in SHOWN_ELSEWHERE]


def _initial(option: dict):
    if option["kind"] == "tristate":
        return "Model card"
    if option["kind"] == "choice":
        return option["default"] or ""
    if option["kind"] == "int":
        return ""
    return option["default"]


def init_state(state) -> None:
    for o in options():
        state[f"setting_{o['name']}"] = _initial(o)


def settings(state, **base) -> AnalysisSettings:
    """The settings of the page: the advanced widgets over ``base`` (e.g. ``model=``, ``device=``, ``tta=``)."""
    values = {o["name"]: state[f"setting_{o['name']}"] for o in options()}
    return AnalysisSettings.from_panel(values, base=AnalysisSettings.from_panel(base, strict=True), strict=True)


def section() -> None:
    """The collapsed *Advanced settings* panel (under the Analyze button)."""
    with v3.VExpansionPanels(density="compact", classes="mb-2", id="advanced-settings"):
        with v3.VExpansionPanel(title="Advanced settings"):
            with v3.VExpansionPanelText():
                for o in options():
                    _widget(o)


def _widget(o: dict) -> None:
    key, common = f"setting_{o['name']}", {"density": "compact", "hide_details": True, "classes": "mb-1"}
    html.Div(o["help"], classes="text-caption text-medium-emphasis")
    if o["kind"] == "tristate":
        v3.VSelect(v_model=(key,), items=("items", [t.capitalize() for t in TRISTATE]), label=o["label"],
                   id=f"set-{o['name']}", **common)
    elif o["kind"] == "choice":
        items = ([{"title": DEFAULT_TITLE, "value": ""}] if o["default"] is None else []) + [
            {"title": c, "value": c} for c in o["choices"]]
        v3.VSelect(v_model=(key,), items=("items", items), label=o["label"], id=f"set-{o['name']}", **common)
    elif o["kind"] == "bool":
        v3.VSwitch(v_model=(key,), label=o["label"], id=f"set-{o['name']}", color="primary", **common)
    else:  # int or text: empty = automatic
        v3.VTextField(v_model=(key,), label=o["label"], type="number" if o["kind"] == "int" else "text",
                      placeholder="automatic", id=f"set-{o['name']}", **common)
