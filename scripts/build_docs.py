"""Build the docs site strictly: any warning (a broken link, a missing reference, a docstring
Sphinx cannot read) fails the build.

    .venv/bin/python scripts/build_docs.py                 # -> build/site/index.html
    .venv/bin/python scripts/build_docs.py --out DIR       # elsewhere (the tests use a temp dir)
    .venv/bin/python scripts/build_docs.py --fetch         # only fetch what the build needs

Needs the ``docs`` extra (``pip install '.[docs]'``) and, once, the npm registry (the pinned
widget manager, see docs/_ext/gw_assets.py; ``--fetch`` gets it, as scripts/test.sh does in its
set-up, so that the tests' builds reach nothing). Read the Docs runs the same build
(.readthedocs.yaml).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "site", help="output folder")
    parser.add_argument("--jobs", default="1", help="Sphinx's -j (default 1)")
    parser.add_argument(
        "--source", type=Path, default=REPO / "docs", help="the pages (default docs/)"
    )
    parser.add_argument("--fetch", action="store_true", help="only fetch the widget manager")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.fetch:
        sys.path.insert(0, str(REPO / "docs" / "_ext"))
        import gw_assets

        print(f"docs: {gw_assets.fetch()}")
        return 0
    from sphinx.cmd.build import build_main

    out = args.out.resolve()
    flags = ["-W", "--keep-going", "-n", "-q", "-j", args.jobs, "-b", "html"]
    flags += ["-d", str(out.parent / f"{out.name}.doctrees")]
    code = build_main([*flags, str(args.source.resolve()), str(out)])
    if code == 0:
        print(f"docs: built {out / 'index.html'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
