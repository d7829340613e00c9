"""``make bench``: run every benchmark in bench/ and print its figures
(recorded figures, with the machine, are in bench/RESULTS.md).

Every ``bench/*_bench.py`` module's ``main()`` runs; the spam filter's
evaluation needs the development corpus, outside the repository, and is
skipped with a note when it is absent.
"""

import importlib
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).parent
#: the development corpus (outside the repository, see bench/RESULTS.md)
SPAM_CORPUS = os.environ.get(
    "KTMAIL_SPAM_CORPUS",
    str(HERE / ".." / ".." / "shared" / "corpora" / "spamassassin-public"))


def main():
    status = 0
    for path in sorted(HERE.glob("*_bench.py")):
        print(f"== {path.stem}", flush=True)
        result = importlib.import_module(f"bench.{path.stem}").main()
        # an exit status; some return their figures instead (for their callers)
        status |= result if isinstance(result, int) else 0
    from bench import spam_big, spam_eval
    print("== spam filter, one huge message: python -m bench.spam_big 50", flush=True)
    status |= spam_big.main(["50"]) or 0
    if os.path.isdir(os.path.join(SPAM_CORPUS, "spam")):
        print("== spam filter: python -m bench.spam_eval --train-half", SPAM_CORPUS, flush=True)
        status |= spam_eval.main([SPAM_CORPUS, "--train-half"]) or 0
    else:
        print(f"== spam filter: skipped, no corpus at {SPAM_CORPUS} "
              "(set KTMAIL_SPAM_CORPUS=DIR with DIR/spam and DIR/ham)")
    return status


if __name__ == "__main__":
    sys.exit(main())
