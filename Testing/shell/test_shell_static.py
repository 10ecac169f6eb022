"""The shell module: compiles, its .ui matches the code, parameter names exist, Logic calls exist."""

from __future__ import annotations

import ast
import py_compile
import xml.etree.ElementTree as ET

import pytest
from shell_support import MODULE, SHELL, UI, attribute_uses, classes, methods

PY_FILES = sorted(p for p in MODULE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", PY_FILES, ids=lambda p: str(p.relative_to(MODULE)))
def test_every_module_python_file_compiles(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)


def ui_widgets() -> dict[str, ET.Element]:
    root = ET.parse(UI).getroot()
    return {w.get("name"): w for w in root.iter("widget")}


def ui_parameter_names() -> dict[str, str]:
    """widget name -> SlicerParameterName."""
    out = {}
    for name, w in ui_widgets().items():
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                out[name] = prop.find("string").text
    return out


def parameter_fields(tree) -> dict[str, str]:
    """Fields of the @parameterNodeWrapper class: name -> annotation source."""
    for cls in classes(tree).values():
        if any(isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in cls.decorator_list):
            return {n.target.id: ast.unparse(n.annotation) for n in cls.body if isinstance(n, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in the module")


def test_ui_is_well_formed_with_the_panel_widgets():
    root = ET.parse(UI).getroot()
    assert root.tag == "ui"
    widgets = ui_widgets()
    assert widgets["DrasCLRSlicer"].get("class") == "qMRMLWidget"
    wanted = {"inputVolumeSelector": "qMRMLNodeComboBox", "lobesSelector": "qMRMLNodeComboBox",
              "modelComboBox": "QComboBox", "importModelButton": "QPushButton", "deviceComboBox": "QComboBox",
              "analyzeButton": "QPushButton", "progressBar": "QProgressBar", "statusLabel": "QLabel",
              "cancelButton": "QPushButton", "loadDemoButton": "QPushButton", "opacitySlider": "ctkSliderWidget",
              "exportCsvButton": "QPushButton", "exportHtmlButton": "QPushButton", "correctButton": "QPushButton",
              "segmentEditorWidget": "qMRMLSegmentEditorWidget", "finetuneButton": "QPushButton",
              "versionsListWidget": "QListWidget", "revertVersionButton": "QPushButton",
              "ttaCheckBox": "QCheckBox"}
    assert {n: widgets[n].get("class") for n in wanted if n in widgets} == wanted
    devices = [i.find("property/string").text for i in widgets["deviceComboBox"].findall("item")]
    assert devices == ["Auto", "CUDA", "CPU"]
    # Analyze starts disabled (enabled only once inputs are valid)
    enabled = [p for p in widgets["analyzeButton"].findall("property") if p.get("name") == "enabled"]
    assert enabled and enabled[0].find("bool").text == "false"


def test_custom_widget_classes_are_declared():
    root = ET.parse(UI).getroot()
    declared = {c.find("class").text for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    assert {c for c in used if not c.startswith("Q")} <= declared


def test_every_ui_name_used_by_the_code_exists(shell_tree):
    used = attribute_uses(shell_tree, "self", "ui")
    missing = sorted(used - set(ui_widgets()))
    assert not missing, f"self.ui.<name> used in DrasCLRSlicer.py but absent from the .ui: {missing}"
    assert len(used) >= 15


def test_every_slicer_parameter_name_is_a_parameter_node_field(shell_tree):
    fields = parameter_fields(shell_tree)
    bound = ui_parameter_names()
    unknown = {w: p for w, p in bound.items() if p not in fields}
    assert not unknown, f"SlicerParameterName values with no parameter node field: {unknown}"
    assert set(bound.values()) >= {"inputVolume", "lobes", "device", "opacity", "tta"}
    assert "Choice" in fields["device"] and "'Auto', 'CUDA', 'CPU'" in fields["device"]


def test_module_metadata(shell_tree):
    text = SHELL.read_text()
    module = classes(shell_tree)["DrasCLRSlicer"]
    src = ast.unparse(module)
    assert 'title = "DrasCLR Lung Analysis"' in src.replace("'", '"')
    assert "Chest Imaging Platform" in src
    assert "DrasCLR" in text and "Yu K." in text and "Medical Image Analysis" in text and "2023" in text
    assert {"DrasCLRSlicer", "DrasCLRSlicerParameterNode", "DrasCLRSlicerWidget", "DrasCLRSlicerLogic",
            "DrasCLRSlicerTest"} <= set(classes(shell_tree))
    bases = {c: [ast.unparse(b) for b in n.bases] for c, n in classes(shell_tree).items()}
    assert "ScriptedLoadableModuleTest" in bases["DrasCLRSlicerTest"]
    assert "ScriptedLoadableModuleLogic" in bases["DrasCLRSlicerLogic"]


def test_nothing_is_installed_at_import(shell_tree):
    """Module-level code only imports Slicer/Qt and the standard library; installs happen on first use."""
    top_imports = set()
    for n in shell_tree.body:
        if isinstance(n, ast.Import):
            top_imports |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            top_imports.add((n.module or "").split(".")[0])
    assert top_imports <= {"importlib", "logging", "os", "typing", "qt", "slicer", "vtk", "ctk"}, top_imports
    statements = [n for n in shell_tree.body if isinstance(n, ast.Expr)]
    assert len(statements) == 1 and isinstance(statements[0].value, ast.Constant)  # only the docstring runs
    module_init = ast.unparse(classes(shell_tree)["DrasCLRSlicer"])
    assert "pip" not in module_init and "installTorch" not in module_init


def bridge_methods() -> set[str]:
    bridge = ast.parse((MODULE / "DrasCLRSlicerLib" / "logic.py").read_text())
    return methods(classes(bridge)["DrasCLRLogic"])


def test_widget_calls_one_logic_whose_methods_exist(shell_tree):
    """The widget calls one Logic object: its Slicer-side methods or, through it, the MRML bridge's (there is
    no ``logic.bridge`` detour and no pass-through layer)."""
    cls = classes(shell_tree)
    used = attribute_uses(cls["DrasCLRSlicerWidget"], "self", "logic")
    assert "bridge" not in used
    known = methods(cls["DrasCLRSlicerLogic"]) | bridge_methods()
    assert not used - known, f"Widget calls missing Logic methods: {sorted(used - known)}"
    assert {"run_in_subprocess", "export_csv", "export_html", "set_opacity", "segment_editor_node",
            "next_review_unit", "show_uncertainty"} & used == {"export_csv", "export_html", "set_opacity",
                                                                  "segment_editor_node", "next_review_unit",
                                                                  "show_uncertainty"}


def test_shell_logic_delegates_to_existing_bridge_methods(shell_tree):
    """self.bridge.X (the MRML bridge) in the shell must be a DrasCLRLogic method."""
    used = attribute_uses(shell_tree, "self", "bridge") | attribute_uses(shell_tree, "logic", "bridge")
    missing = used - bridge_methods()
    assert not missing, f"shell calls DrasCLRLogic methods that do not exist: {sorted(missing)}"
    assert {"run_in_subprocess", "finetune_from_corrections"} <= used


def test_panel_settings_fields_are_analysis_settings(shell_tree):
    """Every analysis option the panel shows is an AnalysisSettings field under its camelCase name, and every
    value its widget can hold becomes a valid setting (what ``DrasCLRSlicerLogic.analysisSettings`` builds)."""
    from drasclr.core.settings import AnalysisSettings, camel, shell_options

    fields = parameter_fields(shell_tree)
    options = {camel(o["name"]): o for o in shell_options()}
    shown = set(fields) & set(options)
    assert {"model", "device", "tta", "huCalibration", "strict", "regions", "densityVeto", "batchSize",
            "harmonize", "thinSlices"} <= shown
    for name in shown:
        annotation = fields[name]
        if "Choice(" in annotation:
            values = ast.literal_eval(annotation.split("Choice(", 1)[1].rsplit(")", 2)[0])
        else:
            values = {"bool": [True, False], "str": ["", "cip-lh"]}.get(annotation, [0, 8])
        for value in values:
            settings = AnalysisSettings.from_panel({name: value}, strict=True)
            assert settings.to_json() == AnalysisSettings.from_json(settings.to_json()).to_json()
    assert AnalysisSettings.from_panel({"densityVeto": "Off", "batchSize": 0}).to_args() == ["--no-density-veto"]


def test_finetune_button_is_gated_on_the_engine(shell_tree):
    src = ast.unparse(classes(shell_tree)["DrasCLRSlicerLogic"])
    assert "finetune_available()" in src
    widget = ast.unparse(classes(shell_tree)["DrasCLRSlicerWidget"])
    assert "self.ui.finetuneButton.enabled = canFinetune" in widget


def test_totalsegmentator_button_hidden_without_the_extension(shell_tree):
    """The "Compute lobes with TotalSegmentator" button exists, is shown only when the extension is installed
    (its visibility is the Logic's availability check, which is False without the extension: see
    Testing/bridge/test_logic.py), and its result becomes the lobe input."""
    ui = ET.parse(UI).getroot()
    button = [w for w in ui.iter("widget") if w.get("name") == "totalSegmentatorButton"]
    assert len(button) == 1 and button[0].get("class") == "QPushButton"
    assert "TotalSegmentator" in button[0].find("property[@name='text']/string").text
    widget = ast.unparse(classes(shell_tree)["DrasCLRSlicerWidget"])
    assert "self.ui.totalSegmentatorButton.visible = self.logic.totalSegmentatorAvailable()" in widget
    assert "p.lobes = self.logic.compute_lobes_totalsegmentator(" in widget
    assert "compute_lobes_totalsegmentator" in bridge_methods()
    logic = ast.unparse(classes(shell_tree)["DrasCLRSlicerLogic"])
    assert "totalsegmentator_available()" in logic
