"""The guided-correction controls of the panel: the .ui holds the two buttons, the widget binds them to Logic
methods that delegate to the bridge's ``show_uncertainty`` / ``next_review_unit``, and they are enabled only with a
review queue."""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET

from shell_support import MODULE, UI, attribute_uses, classes, methods


def widget(name: str) -> ET.Element:
    return next(w for w in ET.parse(UI).getroot().iter("widget") if w.get("name") == name)


def prop(w: ET.Element, name: str):
    p = next((p for p in w.findall("property") if p.get("name") == name), None)
    return None if p is None else p[0].text


def test_ui_has_the_guided_buttons():
    toggle, nxt = widget("uncertaintyButton"), widget("nextReviewButton")
    assert toggle.get("class") == nxt.get("class") == "QPushButton"
    assert prop(toggle, "checkable") == "true" and prop(toggle, "text") == "Show uncertainty"
    assert prop(nxt, "text") == "Next region to review" and "reviewed" in prop(nxt, "toolTip")


def test_buttons_are_bound_to_logic_methods_that_reach_the_bridge(shell_tree):
    cls = classes(shell_tree)
    widget_src = ast.unparse(cls["DrasCLRSlicerWidget"])
    assert 'self.ui.uncertaintyButton.connect("toggled(bool)", self.onUncertaintyToggled)' in widget_src.replace(
        "'", '"')
    assert 'self.ui.nextReviewButton.connect("clicked(bool)", self.onNextReview)' in widget_src.replace("'", '"')
    assert {"show_uncertainty", "next_review_unit"} <= attribute_uses(cls["DrasCLRSlicerWidget"], "self", "logic")
    bridge = ast.parse((MODULE / "DrasCLRSlicerLib" / "logic.py").read_text())
    assert {"show_uncertainty", "next_review_unit"} <= methods(classes(bridge)["DrasCLRLogic"])
    assert "self.ui.nextReviewButton.enabled = hasQueue" in widget_src
    assert "self.ui.uncertaintyButton.enabled = hasQueue" in widget_src
