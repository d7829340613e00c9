"""``make bench``: run every benchmark in bench/ and print its figures.

Each benchmark is a module with ``main(argv) -> exit status``; the ones
that need input (a corpus) are skipped with a note when it is absent.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
#: the development corpus (outside the repository, see bench/RESULTS.md)
SPAM_CORPUS = os.environ.get(
    "KTMAIL_SPAM_CORPUS",
    os.path.join(HERE, "..", "..", "shared", "corpora", "spamassassin-public"))


def main():
    status = 0
    from bench import spam_big, spam_eval
    print("== spam filter, one huge message: python -m bench.spam_big 50")
    status |= spam_big.main(["50"])
    if os.path.isdir(os.path.join(SPAM_CORPUS, "spam")):
        print("== spam filter: python -m bench.spam_eval --train-half", SPAM_CORPUS)
        status |= spam_eval.main([SPAM_CORPUS, "--train-half"])
    else:
        print(f"== spam filter: skipped, no corpus at {SPAM_CORPUS} "
              "(set KTMAIL_SPAM_CORPUS=DIR with DIR/spam and DIR/ham)")
    return status


if __name__ == "__main__":
    sys.exit(main())
