"""The ``drasclr`` command line. Each subcommand lives in its own module with ``add_parser`` and ``run``.

Exit codes: 0 success; 2 bad input (one line on stderr starting ``error:``, no partial outputs); 3 batch
``analyze`` with some failed cases (listed in ``OUT/failed_cases.csv``); 1 an internal error (one ``error:`` line;
``-v`` shows the traceback); 130 interrupted, 143 terminated (SIGTERM; temporary outputs removed); 75 training
paused at a checkpoint (``finetune cohort --pause-after-minutes``; continue with ``--resume``).
Other stderr lines start with ``progress:``, ``info:`` or ``warning:`` so a caller can filter them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# numpy asks the kernel for transparent huge pages on every large array (NUMPY_MADVISE_HUGEPAGE): on a thin-slice
# scan, whose per-voxel temporaries are large, that held 0.27 GiB more resident memory at 533 slices for no speed
# (docs/inference_speed.md, session 12). Read when numpy is first imported, which the command line has not done yet;
# a value set by the user wins.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

from ..core.errors import InputError, Terminated
from ..core.outputs import terminate_on_signals

# subcommand name -> module under drasclr.cli (imported only when used, so `drasclr --help` is fast)
COMMANDS = {
    "analyze": "analyze",
    "compare": "compare",
    "evaluate": "evaluate",
    "export": "export",
    "finetune": "finetune",
    "phantom": "phantom",
    "pretrain": "pretrain",
    "outcome": "outcome",
    "web": "web",
    "serve": "web",
}


class _LineFormatter(logging.Formatter):
    """``info: ...`` / ``warning: ...`` lines (never a bare line a caller could mistake for an error)."""

    def format(self, record):
        text = super().format(record)
        if text.startswith(("progress: ", "info: ", "warning: ")):  # the message names its kind already
            return text
        kind = "warning" if record.levelno >= logging.WARNING else "info"
        return f"{kind}: {text}"


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter("%(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors follow the same contract
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser(names=None) -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog="drasclr", description="DrasCLR: emphysema-subtype analysis of chest CT.")
    parser.add_argument("--version", action="version", version=f"drasclr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in dict.fromkeys(COMMANDS[name] for name in names or COMMANDS):  # a module may serve two names
        importlib.import_module(f"{__name__}.{module}").add_parser(sub)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # import only the module that is asked for
    name = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser([name] if name in COMMANDS else None)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _setup_logging(args.verbose)
    terminate_on_signals()
    try:
        return int(args.run(args) or 0)
    except InputError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory (try a smaller --batch-size, or a machine with more memory)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Terminated as exc:
        print(f"error: terminated by {exc}; temporary outputs removed", file=sys.stderr)
        return 143
    except Exception as exc:  # a bug, not bad input: still one line (the traceback with -v)
        if args.verbose:
            logging.getLogger(__name__).exception("internal error")
        print(f"error: internal error {type(exc).__name__}: {_one_line(exc)} (run with -v for details)",
              file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
