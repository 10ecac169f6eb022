"""The ``drasclr`` command line. Each subcommand lives in its own module with ``add_parser`` and ``run``.

Exit codes: 0 success; 2 bad input (one line on stderr starting ``error:``, no partial outputs).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import InputError

# subcommand name -> module under drasclr.cli (imported only when used, so `drasclr --help` is fast)
COMMANDS = {
    "analyze": "analyze",
    "evaluate": "evaluate",
    "finetune": "finetune",
    "phantom": "phantom",
    "pretrain": "pretrain",
    "outcome": "outcome",
    "web": "web",
    "serve": "web",
}


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
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return int(args.run(args) or 0)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
