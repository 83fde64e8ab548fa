"""The ``toolkit`` command: one entry point, one subcommand per thing users do.

Each subcommand lives in the module that implements it and exposes two functions::

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...

Modules are imported only when their subcommand runs, so ``toolkit --help`` stays fast.
A :class:`~toolkit.errors.ToolkitError` becomes a one-line ``error: <path>: <problem>`` and exit
code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# name -> (module, one-line summary). The module's docstring is shown by `toolkit NAME --help`.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("toolkit.demo", "synthesise speech, degrade it and rank it with the default model"),
    "evaluate": ("toolkit.scoring.evaluate", "zero-shot uncertainty SRCC of checkpoints on MOS datasets"),
    "manifest": ("toolkit.data.manifest", "scan audio folders into a manifest (duration, rate, hash)"),
    "shard": ("toolkit.data.shards", "write a manifest into webdataset tar shards of 16 kHz audio"),
    "pretrain": ("toolkit.training.cli", "contrastive wav2vec pretraining (LightningCLI, YAML configs)"),
    "import-fairseq": ("toolkit.models.convert", "convert a fairseq wav2vec checkpoint to the toolkit's"),
    "export-fairseq": ("toolkit.models.convert", "convert a toolkit checkpoint to fairseq's format"),
    "bank": ("toolkit.scoring.bank", "build a reference bank from clean real speech (extensions beyond the paper)"),
    "degrade": ("toolkit.degrade", "make graded degraded copies of clean clips (noise, codecs...)"),
    "submit": ("toolkit.slurm.cli", "submit pretraining / evaluation jobs to SLURM"),
}


def _load(name: str):
    module = importlib.import_module(SUBCOMMANDS[name][0])
    prefix = name.replace("-", "_")
    add = getattr(module, f"add_{prefix}_arguments", None) or module.add_arguments
    run = getattr(module, f"run_{prefix}", None) or module.run
    return module, add, run


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="toolkit",
        description="Domain-adaptive wav2vec pretraining and zero-shot MOS evaluation.",
        epilog="Run `toolkit SUBCOMMAND --help` for an example of each.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for name, (_, summary) in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=summary, add_help=False)
            continue
        module, add, _ = _load(name)
        doc = (getattr(add, "__doc__", None) or module.__doc__ or summary).strip()
        p = sub.add_parser(
            name,
            help=summary,
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add(p)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    for token in argv:
        if token in SUBCOMMANDS:
            return token
        if not token.startswith("-"):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_in(argv)
    if command == "pretrain":
        # LightningCLI parses its own arguments (config files, --trainer.*, --model.*).
        from toolkit.training.cli import main as pretrain_main

        debug = "--debug" in argv[: argv.index("pretrain")]
        rest = argv[argv.index("pretrain") + 1 :]
        return _guarded(lambda: pretrain_main(rest), debug)
    parser = build_parser(only=command if command else "")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 0
    _, _, run = _load(args.command)
    return _guarded(lambda: run(args), args.debug)


def _guarded(fn, debug: bool) -> int:
    from toolkit.errors import ToolkitError

    try:
        code = fn()
    except ToolkitError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0 if code is None else int(code)


if __name__ == "__main__":
    raise SystemExit(main())
