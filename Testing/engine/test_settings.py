"""One settings object: the command line, the panels and stats.json describe an analysis with the same fields."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from drasclr.cli import build_parser
from drasclr.core.errors import InputError
from drasclr.core.settings import AnalysisSettings, add_arguments, fields, shell_options


def parsed(*argv: str) -> AnalysisSettings:
    return AnalysisSettings.from_args(build_parser(["analyze"]).parse_args(["analyze", "CT", "-o", "OUT", *argv]))


def test_defaults_are_the_command_lines():
    assert parsed() == AnalysisSettings()
    assert parsed().to_args() == []


def test_every_field_has_a_flag_and_round_trips_through_it():
    """A non-default value of every field survives settings -> flags -> the analyze parser -> settings."""
    other = {"model": "cip-lh", "use_model": False, "device": "cpu", "tta": False, "regions": "zones",
             "lobes_from": "lungmask", "lobes_convention": "cip", "hu_calibration": "air", "harmonize": "off",
             "thin_slices": "slabs",
             "density_veto": True,
             "strict": True, "embedding": True, "batch_size": 12, "series": "1.2.3", "allow_uneven_slices": True}
    assert set(other) == {f.name for f in fields()}, "a new setting needs a value here"
    for name, value in other.items():
        settings = AnalysisSettings(**{name: value})
        assert parsed(*settings.to_args()) == settings, name
    both = AnalysisSettings(**other)
    assert parsed(*both.to_args()) == both
    assert AnalysisSettings.from_json(both.to_json()) == both


def test_tristate_density_rule():
    assert parsed("--density-veto").density_veto is True
    assert parsed("--no-density-veto").density_veto is False
    assert parsed().density_veto is None  # the model card decides


@pytest.mark.parametrize("change, message", [
    ({"regions": "segments"}, "--regions must be one of"),
    ({"batch_size": 0}, r"--batch-size must be in \[1, 65536\]"),
    ({"batch_size": 2.5}, "--batch-size must be an integer"),
    ({"tta": "yes"}, "--tta must be true or false"),
])
def test_bad_values_are_refused_naming_the_flag(change, message):
    with pytest.raises(InputError, match=message):
        AnalysisSettings().replace(**change)


def test_unknown_keys_are_refused_where_a_typo_would_fall_back_to_a_default():
    with pytest.raises(InputError, match="unknown analysis setting"):
        AnalysisSettings.from_json({"hu_calbration": "none"})
    with pytest.raises(InputError, match="unknown analysis setting"):
        AnalysisSettings.from_panel({"huCalbration": "None"}, strict=True)
    assert AnalysisSettings.from_panel({"inputVolume": object()}) == AnalysisSettings()  # a panel holds more


def test_panels_offer_every_user_setting_with_its_choices():
    options = {o["name"]: o for o in shell_options()}
    assert {"model", "device", "tta", "regions", "hu_calibration", "density_veto", "strict", "batch_size",
            "lobes_from"} <= set(options)
    assert "series" not in options  # picked from a DICOM folder on the command line only
    assert options["hu_calibration"]["choices"] == ["auto", "air", "none"]
    assert options["density_veto"]["kind"] == "tristate" and "%%" not in options["density_veto"]["help"]
    assert {o["name"] for o in shell_options(advanced=False)} == {"model", "use_model", "device"}


def test_a_new_field_reaches_the_parser_without_other_code():
    """Adding an option is one field: the parser and the child's flags follow from its metadata."""
    from drasclr.core import settings as module

    @dataclasses.dataclass(frozen=True)
    class Extended(AnalysisSettings):
        smoothing: str = module.option("auto", flag="--smoothing", label="Smoothing", choices=("auto", "off"),
                                       help="a made-up option")

    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser, Extended)
    args = parser.parse_args(["--smoothing", "off", "--no-tta"])
    assert Extended.from_args(args) == Extended(smoothing="off", tta=False)
    assert Extended(smoothing="off").to_args() == ["--smoothing", "off"]
    assert Extended.from_json(Extended(smoothing="off").to_json()).smoothing == "off"
    with pytest.raises(InputError, match="--smoothing must be one of"):
        Extended(smoothing="sometimes").checked()


def test_argument_errors_are_one_line_and_fast_to_reach():
    """`drasclr analyze` with a bad choice: exit 2, one `error:` line (heavy imports come after parsing)."""
    run = subprocess.run([sys.executable, "-m", "drasclr", "analyze", "ct.nii.gz", "-o", "out", "--regions", "x"],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.startswith("error:") and len(run.stderr.strip().splitlines()) == 1
    probe = ("import sys, drasclr.cli as c; c.build_parser(); "
             "print(sorted(m for m in ('torch', 'SimpleITK', 'monai', 'scipy') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"
