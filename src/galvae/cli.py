"""The ``galvae`` command line: one verb per pipeline stage (DESIGN.md §1).

Each verb parses its options, calls the stage's plain Python function, prints a tally, and returns
an exit status: 0 success, 1 when nothing usable remains (or ``--strict`` and something was rejected),
2 for bad arguments or unreadable inputs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__

log = logging.getLogger("galvae")


def _cmd_inspect(args) -> int:
    """Read spectrum files and report what was read and what was rejected, with reasons."""
    from .sources.sdss import find_spectrum_files, read_spectra

    paths: list[str] = []
    for item in args.paths:
        p = Path(item)
        if p.is_dir():
            paths.extend(find_spectrum_files(p))
        else:
            paths.append(str(p))
    if not paths:
        print("no spectrum files found", file=sys.stderr)
        return 2
    spectra, rejects = read_spectra(paths, workers=args.workers, progress=not args.quiet)
    if args.out:
        from astropy.table import Table

        rows = [(s.id, s.specobjid, s.z, s.z_err, s.zwarning, s.spec_class, s.subclass, s.vdisp,
                 s.sn_median, s.flux.size, s.n_good, s.path) for s in spectra]
        names = ("id", "specobjid", "z", "z_err", "zwarning", "class", "subclass", "vdisp", "sn_median",
                 "n_pix", "n_good", "path")
        Table(rows=rows, names=names).write(args.out, overwrite=True)
    for r in rejects:
        print(f"rejected {r.path}: {r.reason}")
    print(f"read {len(spectra)} spectra, rejected {len(rejects)} of {len(paths)} files")
    if not spectra or (args.strict and rejects):
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="galvae",
        description="Informative latent variables of galaxy spectra: read, prepare, fit, select, explain.",
    )
    parser.add_argument("--version", action="version", version=f"galvae {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("inspect", help="read SDSS spectrum files; list what was read and what was rejected")
    p.add_argument("paths", nargs="+", help="spec-*.fits files or folders holding them")
    p.add_argument("--out", help="write a table of the spectra read (FITS or ECSV, by extension)")
    p.add_argument("--workers", type=int, default=None, help="reader processes (default: one per core)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any file was rejected")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_inspect)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
