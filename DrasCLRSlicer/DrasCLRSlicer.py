"""DrasCLR Lung Analysis: the 3D Slicer module (Qt shell).

The shell is thin: it loads ``Resources/UI/DrasCLRSlicer.ui``, binds the widgets to a parameter node and calls
the Logic. All MRML work lives in ``DrasCLRSlicerLib`` (tested on slicer-core without the application); the
engine (``drasclr``) runs in a PythonSlicer child process so the UI stays responsive and Cancel can stop it.
Nothing is installed when the module is imported: the engine's Python packages are installed on first use,
after the user agrees.
"""

import importlib.util
import logging
import os
from typing import Annotated, Optional, Union

import qt
import slicer
import vtk
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
TERMINOLOGY_FILE = os.path.join(MODULE_DIR, "Resources", "SegmentationCategoryTypeModifier-DrasCLR.term.json")

#
# DrasCLRSlicer
#


class DrasCLRSlicer(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "DrasCLR Lung Analysis"
        self.parent.categories = ["Chest Imaging Platform"]
        self.parent.dependencies = []
        self.parent.contributors = ["DrasCLRSlicer contributors"]
        self.parent.helpText = """
Emphysema-subtype map (normal, centrilobular, paraseptal, panlobular) and per-lobe densitometry of a chest CT in
one click. Correct the map with the Segment Editor and fine-tune the model from your corrections.
Heavy work runs in a background process; the same analysis runs on whole cohorts with the <code>drasclr</code>
command line. See the <a href="https://github.com/DrasCLRSlicer/DrasCLRSlicer">extension documentation</a>.
"""
        self.parent.acknowledgementText = """
The model follows DrasCLR. If you use this module in your research, please cite:
Yu K., Sun L., Chen J., Reynolds M., Chaudhary T., Batmanghelich K.: DrasCLR: A self-supervised framework of
learning disease-related and anatomy-specific representation for 3D lung CT images.
Medical Image Analysis, 2023. Emphysema subtype names and colours are given in a terminology that maps onto
the Chest Imaging Platform (CIP) chest types.
"""
        slicer.app.connect("startupCompleted()", self.loadTerminology)

    def loadTerminology(self):
        """Register the subtype terminology so the Segment Editor shows proper names and codes."""
        try:
            slicer.modules.terminologies.logic().LoadTerminologyFromFile(TERMINOLOGY_FILE)
        except Exception as exc:  # the module works without it; only the terminology selector is poorer
            logging.warning(f"DrasCLR terminology not loaded: {exc}")


#
# DrasCLRSlicerParameterNode
#


@parameterNodeWrapper
class DrasCLRSlicerParameterNode:
    """What the panel shows, saved with the scene.

    inputVolume - the chest CT (Hounsfield units).
    lobes - optional lobe segmentation or LTRC labelmap (values 1-5).
    device - where the engine runs: Auto (CUDA when present), CUDA or CPU.
    tta - mirrored test-time augmentation (on by default: a little more accurate, about twice the subtype time).
    huCalibration - scanner HU calibration from outside air: Auto (correct offsets beyond 20 HU), Air (always
        correct), None (measure only); as ``drasclr analyze --hu-calibration``.
    strict - refuse a CT whose voxel size is outside the model's validated range (else: flagged in the panel).
    regions, densityVeto, batchSize, harmonize, thinSlices - the advanced settings: statistics per lobe or zone; the
        density rule (as the model card says, on or off); patches per forward pass (0: from memory); kernel/dose
        harmonization; sub-millimetre slices analysed as about 2 mm slabs when they hold no finer detail (Auto,
        default), always natively (Native) or always as slabs (Slabs: faster, a little less accurate on true thin
        slices).
    The analysis fields are named as ``drasclr.core.settings.AnalysisSettings`` (camelCase) and become one settings
    object in ``DrasCLRSlicerLogic.analysisSettings``: a new option is a field there plus one widget here.
    opacity - fill opacity of the result segmentations.
    model - path of the selected model file ("" = the engine's default).
    subtypes, regions, table - result nodes of the last analysis.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    lobes: Optional[Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]]  # noqa: UP007,UP045 (parameterNodeWrapper reads typing forms)
    device: Annotated[str, Choice(["Auto", "CUDA", "CPU"])] = "Auto"
    tta: bool = True
    huCalibration: Annotated[str, Choice(["Auto", "Air", "None"])] = "Auto"
    strict: bool = False
    regions: Annotated[str, Choice(["Lobes", "Zones"])] = "Lobes"
    densityVeto: Annotated[str, Choice(["Model card", "On", "Off"])] = "Model card"
    batchSize: Annotated[int, WithinRange(0, 65536)] = 0
    harmonize: Annotated[str, Choice(["Auto", "Off"])] = "Auto"
    thinSlices: Annotated[str, Choice(["Auto", "Native", "Slabs"])] = "Auto"
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.6
    model: str = ""
    subtypes: Optional[vtkMRMLSegmentationNode]  # noqa: UP007,UP045 (parameterNodeWrapper reads typing forms)
    regions: Optional[vtkMRMLSegmentationNode]  # noqa: UP007,UP045 (parameterNodeWrapper reads typing forms)
    table: Optional[slicer.vtkMRMLTableNode]  # noqa: UP007,UP045 (parameterNodeWrapper reads typing forms)


#
# DrasCLRSlicerWidget
#


class DrasCLRSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: inputs, model and device, Analyze with progress and Cancel, results, correction."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._results = None
        self._running = False
        self._cancelRequested = False
        self._versions = []

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DrasCLRSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = DrasCLRSlicerLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.loadDemoButton.connect("clicked(bool)", self.onLoadDemo)
        self.ui.totalSegmentatorButton.connect("clicked(bool)", self.onComputeLobesTotalSegmentator)
        # offered only where the SlicerTotalSegmentator extension is installed
        self.ui.totalSegmentatorButton.visible = self.logic.totalSegmentatorAvailable()
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.analyzeButton.connect("clicked(bool)", self.onAnalyze)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.exportCsvButton.connect("clicked(bool)", self.onExportCsv)
        self.ui.exportHtmlButton.connect("clicked(bool)", self.onExportHtml)
        self.ui.compareButton.connect("clicked(bool)", self.onCompareWithPrior)
        self.ui.correctButton.connect("toggled(bool)", self.onCorrectToggled)
        self.ui.finetuneButton.connect("clicked(bool)", self.onFinetune)
        self.ui.uncertaintyButton.connect("toggled(bool)", self.onUncertaintyToggled)
        self.ui.nextReviewButton.connect("clicked(bool)", self.onNextReview)
        self.ui.revertVersionButton.connect("clicked(bool)", self.onRevertVersion)
        self.ui.opacitySlider.connect("valueChanged(double)", self.onOpacityChanged)

        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.segment_editor_node())
        self.ui.progressBar.setVisible(False)
        self.refreshModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelRequested = True
        self.removeObservers()
        if self.logic is not None:
            self.logic.cleanup()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self._results = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        """Analyze is enabled only with a CT selected and nothing running; results need results."""
        p = self._parameterNode
        ready = bool(p and p.inputVolume) and not self._running
        self.ui.analyzeButton.enabled = ready
        self.ui.analyzeButton.toolTip = "Run the analysis" if ready else "Select a chest CT first"
        self.ui.cancelButton.enabled = self._running
        self.ui.totalSegmentatorButton.enabled = ready
        self.ui.resultsCollapsibleButton.enabled = self._results is not None and not self._running
        hasSubtypes = self._results is not None and self._results.subtypes is not None
        self.ui.correctButton.enabled = hasSubtypes
        hasQueue = hasSubtypes and self._results.review is not None
        self.ui.uncertaintyButton.enabled = hasQueue
        self.ui.nextReviewButton.enabled = hasQueue
        canFinetune = hasSubtypes and self.logic.finetuneAvailable()
        self.ui.finetuneButton.enabled = canFinetune
        self.ui.finetuneButton.toolTip = (
            "Fine-tune the model from the corrected subtype map" if canFinetune
            else "Needs a subtype map and an engine with fine-tuning (drasclr.dense.corrections)")

    # --- actions --------------------------------------------------------------------------------------
    def onLoadDemo(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to load the demo CT.", waitCursor=True):
            node = self.logic.load_demo_ct()  # Slicer's own reader (or the phantom): no extra packages needed
            self._parameterNode.inputVolume = node
            slicer.util.setSliceViewerLayers(background=node, fit=True)

    def onComputeLobesTotalSegmentator(self) -> None:
        """TotalSegmentator's five lobes of the selected CT, selected as the lobe input of the next analysis."""
        p = self._parameterNode
        self.ui.statusLabel.text = "Computing lobes with TotalSegmentator (a few minutes on a CPU)..."
        slicer.app.processEvents()
        with slicer.util.tryWithErrorDisplay("Computing lobes with TotalSegmentator failed.", waitCursor=True):
            p.lobes = self.logic.compute_lobes_totalsegmentator(p.inputVolume, cpu=p.device == "CPU")
            self.ui.statusLabel.text = f"Lobes: {p.lobes.GetName()} (used by the next analysis)."

    def _runInBackground(self, what: str, work):
        """Run ``work(onProgress, shouldCancel, onIdle)`` (a child process) with progress bar and Cancel.
        Returns its result, or None when it was cancelled or failed (the status line says which)."""
        p = self._parameterNode
        if not self.logic.setupPythonRequirements(askConfirmation=True, device=p.device):
            self.ui.statusLabel.text = "Python packages missing: nothing was run."
            return None
        self._running = True
        self._cancelRequested = False
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.setStyleSheet("")  # an earlier run's warning colour
        self.ui.statusLabel.text = f"{what}: starting the engine..."
        self._checkCanApply()
        from DrasCLRSlicerLib.process import Cancelled

        try:
            return work(self._onProgress, lambda: self._cancelRequested, slicer.app.processEvents)
        except Cancelled:
            self.ui.statusLabel.text = f"{what} cancelled: nothing was kept."
        except Exception as exc:
            logging.exception(f"DrasCLR {what} failed")
            self.ui.statusLabel.text = f"{what} failed: {exc}"
            slicer.util.errorDisplay(f"{what} failed:\n{exc}")
        finally:
            self._running = False
            self.ui.progressBar.setVisible(False)
            self._checkCanApply()
        return None

    def onAnalyze(self) -> None:
        p = self._parameterNode

        def work(onProgress, shouldCancel, onIdle):
            return self.logic.analyzeInBackground(p, onProgress=onProgress, shouldCancel=shouldCancel, onIdle=onIdle)

        results = self._runInBackground("Analysis", work)
        if results is not None:
            self._showResults(results)

    def _onProgress(self, progress) -> None:
        # during an analysis: "Lobes (4 of 9) — about 25 s left", the bar on the estimated share of the run done
        if progress.fraction is not None:
            self.ui.progressBar.setValue(int(round(100 * progress.fraction)))
        self.ui.statusLabel.text = progress.text

    def onCancel(self) -> None:
        self._cancelRequested = True
        self.ui.statusLabel.text = "Cancelling..."

    def _showResults(self, results) -> None:
        self._results = results
        p = self._parameterNode
        p.subtypes = results.subtypes
        p.regions = results.regions
        p.table = results.table
        self.logic.set_opacity(results, p.opacity)
        shown = results.subtypes if results.subtypes is not None else results.regions
        self.ui.segmentEditorWidget.setSegmentationNode(shown)
        self.ui.segmentEditorWidget.setSourceVolumeNode(results.volume)
        self.logic.showTableAndChart(results)
        what = "subtype map and statistics" if results.subtypes is not None else (
            f"{results.region_kind} and statistics (no subtype model in this engine)")
        warnings = [w.get("message", "") for w in getattr(results, "warnings", None) or []]
        notes = [getattr(results, "calibration_line", ""), getattr(results, "harmonization_line", "")]
        self.ui.statusLabel.text = (f"Done: {what}." + "".join(f"\n{n}" for n in notes if n)
                                    + "".join(f"\nWarning: {w}" for w in warnings))
        self.ui.statusLabel.setStyleSheet("color: #d9822b" if warnings else "")
        self._checkCanApply()

    def onOpacityChanged(self, value) -> None:
        if self._results is not None:
            self.logic.set_opacity(self._results, value)

    def onExportCsv(self) -> None:
        self._export("statistics", "stats.csv", "CSV (*.csv)", self.logic.export_csv)

    def onExportHtml(self) -> None:
        self._export("report", "report.html", "HTML (*.html)", self.logic.export_html)

    def _export(self, what: str, name: str, filter: str, write) -> None:
        """Ask where, then ``write(results, path)`` (a Logic export)."""
        path = qt.QFileDialog.getSaveFileName(self.parent, f"Export {what}", name, filter)
        if path:
            with slicer.util.tryWithErrorDisplay(f"Failed to export the {what}.", waitCursor=True):
                write(self._results, path)
                self.ui.statusLabel.text = f"Wrote {path}"

    def onCompareWithPrior(self) -> None:
        """Compare the input CT with the earlier scan chosen beside the button (issue 31; Logic does the work)."""
        p, prior = self._parameterNode, self.ui.priorVolumeSelector.currentNode()
        if prior is None or p.inputVolume is None or prior == p.inputVolume:
            self.ui.statusLabel.text = "Choose an earlier CT of the same patient beside 'Compare with prior'."
            return

        def work(onProgress, shouldCancel, onIdle):
            return self.logic.compareWithPrior(p.inputVolume, prior, model=p.model or None, device=p.device,
                                               onProgress=onProgress, shouldCancel=shouldCancel, onIdle=onIdle)

        nodes = self._runInBackground("Comparison", work)
        if nodes is not None:
            self.logic.showFollowup(nodes)
            self.ui.statusLabel.text = self.logic.followupSummary(nodes)

    def onCorrectToggled(self, checked) -> None:
        self.ui.segmentEditorWidget.setVisible(bool(checked))
        if checked and self._results is not None and self._results.subtypes is not None:
            self.ui.segmentEditorWidget.setSegmentationNode(self._results.subtypes)
            self.ui.segmentEditorWidget.setSourceVolumeNode(self._results.volume)
        if not checked:
            self.ui.segmentEditorWidget.setActiveEffect(None)

    def onUncertaintyToggled(self, checked) -> None:
        """The voxel uncertainty as a heat overlay over the CT in the slice views (or off)."""
        if self._results is None:
            return
        with slicer.util.tryWithErrorDisplay("Failed to show the uncertainty.", waitCursor=True):
            self.logic.show_uncertainty(self._results, bool(checked))

    def onNextReview(self) -> None:
        """Centre the views on the next region of the review queue and mark it reviewed."""
        with slicer.util.tryWithErrorDisplay("Failed to go to the next region.", waitCursor=True):
            unit = self.logic.next_review_unit(self._results)
            if unit is None:
                self.ui.statusLabel.text = "Every region of the review queue has been reviewed."
                return
            from DrasCLRSlicerLib.guided import describe_unit

            self.ui.statusLabel.text = (describe_unit(unit, len(self._results.review.units))
                                        + " Correct it if needed; it counts as reviewed when fine-tuning.")

    def onFinetune(self) -> None:
        """A new model version from the corrected subtype map (``drasclr finetune corrections``, background)."""
        p = self._parameterNode
        self.ui.correctButton.checked = False

        def work(onProgress, shouldCancel, onIdle):
            # model None: the model recorded with the results (the one that made the prediction)
            return self.logic.finetuneFromCorrections(self._results, model=None, device=p.device,
                                                      onProgress=onProgress, shouldCancel=shouldCancel,
                                                      onIdle=onIdle)

        summary = self._runInBackground("Fine-tuning", work)
        if summary is None:
            return
        self.refreshModels(select=summary["model"])
        review = self._results.review
        message = self.logic.finetune_message(summary, len(review.reviewed) if review is not None else 0)
        self.ui.statusLabel.text = f"{message[0].upper()}{message[1:]}. Analyze again to use it."

    # --- models -----------------------------------------------------------------------------------------
    def refreshModels(self, select=None) -> None:
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        combo.addItem("Default (bundled demo model)", "")
        for entry in self.logic.models():
            combo.addItem(entry.label, str(entry.path))
        wanted = select if select is not None else (self._parameterNode.model if self._parameterNode else "")
        index = combo.findData(wanted)
        combo.setCurrentIndex(max(0, index))
        combo.blockSignals(wasBlocked)
        self.onModelChanged(combo.currentIndex)

    def onModelChanged(self, index) -> None:
        path = self.ui.modelComboBox.itemData(index) or ""
        if self._parameterNode:
            self._parameterNode.model = path
        self.ui.versionsListWidget.clear()
        self._versions = self.logic.versionsOf(path)
        for entry, active in self._versions:
            self.ui.versionsListWidget.addItem(entry.label + ("  [active]" if active else ""))
        self.ui.revertVersionButton.enabled = len(self._versions) > 1

    def onImportModel(self) -> None:
        path = qt.QFileDialog.getOpenFileName(self.parent, "Import model (model.safetensors + model.json)", "",
                                              "Model weights (*.safetensors)")
        if path:
            with slicer.util.tryWithErrorDisplay("Failed to import the model.", waitCursor=True):
                entry = self.logic.modelStore().import_model(path)
                self.refreshModels(select=str(entry.path))

    def onRevertVersion(self) -> None:
        row = self.ui.versionsListWidget.currentRow
        if row < 0 or row >= len(self._versions):
            return
        entry, _active = self._versions[row]
        with slicer.util.tryWithErrorDisplay("Failed to revert the model.", waitCursor=True):
            reverted = self.logic.modelStore().revert(entry.name, entry.version)
            self.refreshModels(select=str(reverted.path))


#
# DrasCLRSlicerLogic
#


class DrasCLRSlicerLogic(ScriptedLoadableModuleLogic):
    """The module's one Logic. What is Slicer-application work lives here (parameter node, Python dependencies,
    layouts, the child process's environment); every other method — analysis, results, correction, review,
    exports — is the MRML bridge's ``DrasCLRSlicerLib.logic.DrasCLRLogic`` on ``slicer.mrmlScene``, reached as an
    attribute of this object (imported on first use, after the Python dependencies are in place), so the panel
    and the Python console call one object and the web reading room calls the same bridge."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._bridge = None

    def getParameterNode(self):
        return DrasCLRSlicerParameterNode(super().getParameterNode())

    def cleanup(self) -> None:
        """Remove temporary files of the last background run."""
        if self._bridge is not None:
            self._bridge.cleanup()

    @property
    def bridge(self):
        """The MRML-bridge Logic on ``slicer.mrmlScene`` (imported on first use)."""
        if self._bridge is None:
            from DrasCLRSlicerLib.logic import DrasCLRLogic

            self._bridge = DrasCLRLogic(slicer.mrmlScene)
        return self._bridge

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.bridge, name)

    # --- dependencies -----------------------------------------------------------------------------------
    def setupPythonRequirements(self, askConfirmation: bool = True, device: str = "Auto") -> bool:
        """Make sure torch (through the PyTorch extension) and the engine's packages are installed.

        Returns False when the user declines. Uses ``slicer.pydeps.pip_ensure`` where Slicer has it, else
        ``slicer.util.pip_install``.
        """
        from DrasCLRSlicerLib import dependencies

        missing = dependencies.missing()
        torchMissing = importlib.util.find_spec("torch") is None
        if not missing and not torchMissing:
            return True
        listed = (["torch (PyTorch extension)"] if torchMissing else []) + missing
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                "DrasCLR needs these Python packages, which are not installed yet:\n\n  " + "\n  ".join(listed)
                + "\n\nInstall them now? This downloads several hundred megabytes and can take minutes.",
                "DrasCLR: install Python packages"):
            return False
        if torchMissing:
            self._installTorch(device)
        if missing:
            pydeps = self._pydeps()
            if pydeps is not None:
                from packaging.requirements import Requirement

                pydeps.pip_ensure([Requirement(r) for r in missing],
                                  skip_packages=list(dependencies.PROVIDED_BY_SLICER), requester="DrasCLRSlicer")
            else:
                slicer.util.pip_install(missing)
        return True

    @staticmethod
    def _pydeps():
        """Slicer's package helper module (``slicer.pydeps``, Slicer 5.11+), or None on older Slicer."""
        for name in ("slicer.pydeps", "slicer.packaging"):
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            if hasattr(module, "pip_ensure"):
                return module
        return None

    @staticmethod
    def _installTorch(device: str) -> None:
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError("DrasCLR needs the PyTorch extension: install 'PyTorch' from the Extensions "
                               "Manager, restart Slicer and try again.") from None
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if torchLogic.torchInstalled():
            return
        backend = "cpu" if device == "CPU" else None  # None: PyTorchUtils picks the CUDA build the GPU supports
        torch = torchLogic.installTorch(askConfirmation=False, forceComputationBackend=backend,
                                        torchVersionRequirement=">=2.2")
        if torch is None:
            raise RuntimeError("PyTorch could not be installed")

    # --- analysis ---------------------------------------------------------------------------------------
    @staticmethod
    def analysisSettings(parameterNode):
        """The ``AnalysisSettings`` of the panel: every parameter-node field named like a setting."""
        from drasclr.core.settings import AnalysisSettings, camel, shell_options

        values = {o["name"]: getattr(parameterNode, camel(o["name"])) for o in shell_options()
                  if hasattr(parameterNode, camel(o["name"]))}
        return AnalysisSettings.from_panel(values)

    def analyzeInBackground(self, parameterNode, onProgress=None, shouldCancel=None, onIdle=None, **overrides):
        """The panel's analysis in a PythonSlicer child process (the GUI path), with the panel's settings
        (``overrides``: settings fields); raises Cancelled / EngineError."""
        from DrasCLRSlicerLib import process

        env = process.engine_environment(slicer.util.startupEnvironment())
        return self.bridge.run_in_subprocess(parameterNode.inputVolume, parameterNode.lobes,
                                             self.analysisSettings(parameterNode), on_progress=onProgress,
                                             should_cancel=shouldCancel, on_idle=onIdle, env=env,
                                             **overrides)

    def compareWithPrior(self, volumeNode, prior, model=None, device="Auto", onProgress=None, shouldCancel=None,
                         onIdle=None):
        """``drasclr compare`` of ``prior`` (baseline: a volume node or an analysis folder) and ``volumeNode`` in a
        PythonSlicer child process; returns DrasCLRSlicerLib.followup.FollowupNodes."""
        from DrasCLRSlicerLib import process

        env = process.engine_environment(slicer.util.startupEnvironment())
        return self.bridge.compare_with_prior(volumeNode, prior, model=model, device=device.lower(),
                                              on_progress=onProgress, should_cancel=shouldCancel, on_idle=onIdle,
                                              env=env)

    def showFollowup(self, nodes) -> None:
        """The change map over the baseline, the change table and the trend chart in the layout."""
        slicer.util.setSliceViewerLayers(background=nodes.baseline, fit=True)
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(nodes.table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()
        slicer.modules.plots.logic().ShowChartInLayout(nodes.chart)

    @staticmethod
    def followupSummary(nodes) -> str:
        from DrasCLRSlicerLib.followup import summary

        return summary(nodes)

    def totalSegmentatorAvailable(self) -> bool:
        """The SlicerTotalSegmentator extension is installed (the panel shows its lobe action only then)."""
        from DrasCLRSlicerLib.logic import totalsegmentator_available

        return totalsegmentator_available()

    def showTableAndChart(self, results):
        """Table and chart in a layout with a table and a plot view."""
        layoutManager = slicer.app.layoutManager()
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(results.table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()
        slicer.modules.plots.logic().ShowChartInLayout(results.chart)

    # --- models and fine-tuning -------------------------------------------------------------------------
    def modelStore(self):
        """Bundled models and the user's imported / fine-tuned versions (``$DRASCLR_MODELS`` or
        ``~/.drasclr/models``, the folder the engine's fine-tuning writes to)."""
        from DrasCLRSlicerLib.models import ModelStore

        return ModelStore()

    def models(self):
        """Every model version for the selector (bundled, imported, fine-tuned)."""
        try:
            return self.modelStore().all()
        except (OSError, ValueError) as exc:
            logging.warning(f"DrasCLR model store unreadable: {exc}")
            return []

    def versionsOf(self, path):
        """``[(entry, is_active)]``: the versions of the model family of the model folder ``path``."""
        if not path:
            return []
        store = self.modelStore()
        entry = store.find(path)
        if entry is None:
            return []
        active = store.active(entry.name)
        return [(e, active is not None and e.path == active.path) for e in store.versions(entry.name)]

    def finetuneAvailable(self) -> bool:
        """Fine-tuning needs the engine's corrections trainer (``drasclr.dense.corrections``)."""
        from DrasCLRSlicerLib.logic import finetune_available

        return finetune_available()

    def finetuneFromCorrections(self, results, model=None, device="Auto", onProgress=None, shouldCancel=None,
                                onIdle=None):
        """New model version from the corrected subtype map and the review units visited (confirmed labels), in a
        PythonSlicer child process; returns the engine's summary (``model``: the new folder, ``before``/``after``:
        accuracy on the corrected and reviewed voxels)."""
        from DrasCLRSlicerLib import process

        env = process.engine_environment(slicer.util.startupEnvironment())
        return self.bridge.finetune_from_corrections(results, model=model, device=device.lower(),
                                                     on_progress=onProgress, should_cancel=shouldCancel,
                                                     on_idle=onIdle, env=env)


#
# DrasCLRSlicerTest
#


class DrasCLRSlicerTest(ScriptedLoadableModuleTest):
    """Whole flow on a small chest phantom on the CPU: in-process and in a child process, plus cancel.

    Run with ``Slicer --testing --python-code "slicer.selfTests['DrasCLRSlicer']()"`` or the module's
    Reload & Test button. Installs missing Python packages without asking (testing mode cannot ask).
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_AnalyzePhantom()
        self.setUp()
        self.test_CancelLeavesNoNodes()

    def _phantomVolume(self):
        from DrasCLRSlicerLib.phantom import chest_phantom
        from DrasCLRSlicerLib.volumes import add_volume_node

        return add_volume_node(slicer.mrmlScene, chest_phantom(), "phantom")

    def test_AnalyzePhantom(self):
        self.delayDisplay("Analyzing a chest phantom")
        logic = DrasCLRSlicerLogic()
        self.assertTrue(logic.setupPythonRequirements(askConfirmation=False, device="CPU"))
        volume = self._phantomVolume()

        results = logic.analyze(volume, device="CPU")
        from DrasCLRSlicerLib.tables import table_to_rows

        rows = table_to_rows(results.table)
        self.assertEqual(rows[-1]["region"], "whole_lung")
        self.assertAlmostEqual(rows[-1]["volume_ml"], 2016.0, delta=60.0)  # two ~1 l ellipsoid lungs
        self.assertEqual(results.regions.GetSegmentation().GetNumberOfSegments(), 5)  # estimated lobes

        progress = []  # the child path, densitometry only (the model ran in-process above)
        sub = logic.run_in_subprocess(volume, device="CPU", on_progress=progress.append,
                                      on_idle=slicer.app.processEvents, use_model=False)
        subRows = table_to_rows(sub.table)
        self.assertEqual([r["region"] for r in subRows], [r["region"] for r in rows])
        self.assertAlmostEqual(subRows[-1]["volume_ml"], rows[-1]["volume_ml"], places=3)

        if results.review is not None:
            self.delayDisplay("Uncertainty overlay and the next region to review")
            self.assertIsNotNone(logic.show_uncertainty(results, True))
            unit = logic.next_review_unit(results)
            self.assertEqual(unit["rank"], 1)
            self.assertEqual(results.review.reviewed, [1])
            logic.show_uncertainty(results, False)

        if results.subtypes is not None and logic.finetuneAvailable():
            self.delayDisplay("Fine-tuning from a correction")
            self._correctAndFinetune(logic, results)
        self.delayDisplay("Test passed")

    def _correctAndFinetune(self, logic, results):
        """Relabel the upper half of the lung as centrilobular, fine-tune 5 s into a temporary folder."""
        import tempfile

        import numpy as np

        from DrasCLRSlicerLib.segmentations import labelmap_to_segmentation

        corrected = results.prediction.array.copy()
        self.assertTrue((corrected > 0).any())
        upper = np.arange(corrected.shape[0])[:, None, None] > corrected.shape[0] // 2  # array z up = superior
        corrected[(corrected > 0) & upper] = 2
        labelmap_to_segmentation(slicer.mrmlScene, results.prediction.with_array(corrected), results.volume,
                                 logic.subtype_entries, node=results.subtypes)
        with tempfile.TemporaryDirectory() as root:
            summary = logic.finetune_from_corrections(results, device="cpu", max_seconds=5,
                                                      output_root=root)
            self.assertTrue(os.path.isdir(summary["model"]))
            self.assertTrue(os.path.isfile(os.path.join(summary["model"], "model.json")))

    def test_CancelLeavesNoNodes(self):
        from DrasCLRSlicerLib.process import Cancelled

        logic = DrasCLRSlicerLogic()
        volume = self._phantomVolume()
        before = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(Cancelled):
            logic.run_in_subprocess(volume, device="CPU", should_cancel=lambda: True, use_model=False)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.delayDisplay("Cancel test passed")
