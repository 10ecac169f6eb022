"""Compare with prior in the reading room (issue 31): one self-contained drawer section and its job.

``section(room)`` adds the widgets; the comparison runs as a job of the room's runner through the Logic
(``DrasCLRSlicerLib.followup.prepare_compare`` / ``load_comparison``, the same as the Slicer module's button).
The prior CT is a path in the server's data folder (or an earlier analysis folder there); the change map is shown
over it and the whole-lung change is written under the button.
"""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3
from trame_server.utils.asynchronous import create_task

from drasclr.core.errors import InputError
from DrasCLRSlicerLib import followup, process

from .jobs import JobBusy


def section(room) -> None:
    """The "Compare with prior" drawer section of ``room`` (a :class:`~DrasCLRSlicerWeb.app.ReadingRoom`)."""
    room.state.prior_path = ""
    room.state.followup_summary = ""
    html.Div("6 · Compare with prior", classes="text-subtitle-2 mb-1")
    with html.Div(classes="d-flex mb-1"):
        v3.VTextField(v_model=("prior_path",), label="earlier CT (path in the data folder)", density="compact",
                      hide_details=True, id="prior-path")
        v3.VBtn("Compare", size="small", classes="ml-1 mt-1", id="btn-compare", disabled=("!has_ct || running",),
                click=(lambda text: create_task(compare(room, text)), "[prior_path]"))
    html.Div("{{ followup_summary }}", id="followup-summary", v_show="followup_summary", classes="text-caption mb-3")


async def compare(room, text: str, use_model: bool = True) -> None:
    """Register the open CT to the prior, measure the change per lobe, show the change map over the prior
    (``use_model`` False: densitometry only)."""
    if room.volume is None:
        room._error("open a CT first")
        return
    try:
        prior = room.workspace.resolve_input(text)
        model = room._model()
    except InputError as exc:
        room._error(str(exc))
        return
    volume, device = room.volume, room.state.device

    def prepare():
        node = room.logic.load_ct(prior)
        return followup.prepare_compare(room.logic, volume, node, room.session.run_dir("compare"), model=model,
                                        device=device, use_model=use_model)

    def work(ctx, on_progress, should_cancel):
        return process.run_engine(ctx[0], on_progress=on_progress, should_cancel=should_cancel, env=room._env())

    def finish(ctx, _lines):
        nodes = followup.load_comparison(room.scene, ctx[2], ctx[1])
        room.slicer_app.display_manager.show_volume_in_slice_background(ctx[2])
        room.slicer_app.display_manager.reset_views()
        room._flush(followup_summary=followup.summary(nodes))
        return nodes

    try:
        await room.jobs.run("comparison", prepare, work, finish)
    except JobBusy as exc:
        room._error(str(exc))
