"""The ``mqcontract`` command: the kit's tools and the abstraction's own.

Subcommands import what they need when they run, so ``mqcontract verify`` works with no
database or broker driver installed, and ``mqcontract pgmq install`` or ``demo`` work
without the kit's own dependencies (pytest, hypothesis: the ``kit`` extra).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shutil
import sys
import textwrap
from collections.abc import Sequence

__all__ = ["main"]


def _verify(options: argparse.Namespace) -> int:
    from mqcontract_conformance.verify import run

    return run(options)


def _rules(options: argparse.Namespace) -> int:
    from mqcontract_conformance.rules import all_rules
    from mqcontract_conformance.rules_doc import render_rules_markdown

    if options.markdown:
        sys.stdout.write(render_rules_markdown())
        return 0
    # On a terminal, titles wrap at word boundaries under their column; piped, each
    # rule stays on one line so grep and cut see whole titles.
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 0
    for r in all_rules():
        line = f"{r.id:<9} {r.title}"
        if width > 30:
            line = textwrap.fill(line, width, subsequent_indent=" " * 10)
        print(line)
    return 0


class _VersionAction(argparse.Action):
    """``--version``: the package's and the suite's, computed only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from mqcontract import __version__
        from mqcontract_conformance.registry import SUITE_VERSION

        print(f"mqcontract {__version__} (conformance suite {SUITE_VERSION})")
        parser.exit()


def _pgmq_install(options: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from mqcontract._arguments import usage_error
    from mqcontract.providers.pgmq import install_pgmq

    if not options.dsn.strip():
        # `--dsn "$DATABASE_URL"` with the variable unset: libpq would fall back to its
        # default database (PGDATABASE, the user's name), which nobody named.
        return usage_error(
            "--dsn is empty: name the target database (postgresql://USER@HOST:PORT/DATABASE)"
        )
    scripts = [Path(d) for d in options.upgrade_scripts]
    result = asyncio.run(
        install_pgmq(options.dsn, upgrade=options.upgrade, upgrade_scripts=scripts)
    )
    print(result.describe())
    return 0


#: Modules contributing subcommands: each has ``register(subparsers) -> None`` whose
#: parsers set ``func`` (taking the parsed options, returning an exit status).
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "mqcontract.events.demo",
    "mqcontract_conformance.report.cli",
    "mqcontract_conformance.bench",
    "mqcontract_conformance.stress.cli",
    "mqcontract_conformance.selftest.cli",
)


#: Subcommands that run the rules (pytest, hypothesis) and what they need.
_KIT_COMMANDS = frozenset({"verify", "rules", "report", "bench", "stress", "selftest"})
_KIT_MODULES = ("pytest", "hypothesis")


def build_parser(*, extensions: bool = True) -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs).

    ``extensions=False`` leaves out the contributed subcommands: ``verify`` uses it so
    nothing imports the pytest plugin's package before pytest starts (which would stop
    pytest from rewriting its assertions).
    """
    from mqcontract_conformance.verify import add_arguments

    parser = argparse.ArgumentParser(
        prog="mqcontract", description="A messaging abstraction and its conformance kit."
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)

    verify = sub.add_parser("verify", help="run the conformance suite against providers")
    add_arguments(verify)
    verify.set_defaults(func=_verify)

    rules = sub.add_parser("rules", help="list the rules")
    rules.add_argument("--markdown", action="store_true", help="print RULES.md")
    rules.set_defaults(func=_rules)

    pgmq = sub.add_parser("pgmq", help="PGMQ tooling")
    pgmq_sub = pgmq.add_subparsers(dest="pgmq_command", required=True)
    install = pgmq_sub.add_parser("install", help="install PGMQ into a database (idempotent)")
    install.add_argument("--dsn", required=True, help="postgresql://… of the target database")
    install.add_argument(
        "--upgrade-scripts",
        metavar="DIR",
        action="append",
        default=[],
        help="a directory of PGMQ's upgrade scripts (pgmq--A--B.sql, as in PGMQ's sql/);"
        " an older SQL install is upgraded with them (repeatable)",
    )
    install.add_argument(
        "--no-upgrade",
        dest="upgrade",
        action="store_false",
        help="report an older PGMQ without upgrading it",
    )
    install.set_defaults(func=_pgmq_install)

    for module_name in SUBCOMMAND_MODULES if extensions else ():
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mqcontract`` console script."""
    from mqcontract.errors import MessagingError

    args = list(sys.argv[1:] if argv is None else argv)
    options = build_parser(extensions=args[:1] != ["verify"]).parse_args(args)
    missing = [m for m in _KIT_MODULES if importlib.util.find_spec(m) is None]
    if options.command in _KIT_COMMANDS and missing:
        print(
            f"mqcontract {options.command} needs the conformance kit's dependencies "
            f"({', '.join(missing)} missing): pip install 'mqcontract[kit]'",
            file=sys.stderr,
        )
        return 2
    try:
        return int(options.func(options))
    except MessagingError as exc:
        print(f"mqcontract: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`mqcontract rules | head`): stop quietly. Python would
        # otherwise report the pipe again while flushing stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
