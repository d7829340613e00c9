"""``make bench``: run every ``bench/*_bench.py`` module's ``main()`` and
print its figures (see bench/RESULTS.md for recorded ones)."""

import importlib
import pathlib
import sys


def main():
    here = pathlib.Path(__file__).parent
    for path in sorted(here.glob("*_bench.py")):
        print(f"== {path.stem}", flush=True)
        importlib.import_module(f"bench.{path.stem}").main()


if __name__ == "__main__":
    sys.exit(main())
