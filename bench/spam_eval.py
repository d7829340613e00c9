"""Evaluate the spam filter on a corpus laid out as DIR/spam/* and DIR/ham/*.

    python -m bench.spam_eval DIR                 # heuristics only, every message
    python -m bench.spam_eval DIR --train-half    # + Bayes trained on a seeded half,
                                                  #   evaluated on the other half

Prints spam recall, ham false-positive rate, precision, F1, messages per
second (wall clock, one core: parse + [tokenize +] score) and the CPU time
per message (robust when the machine is shared). With ``--train-half`` the
figures are for the held-out half only, once without and once with Bayes,
so that no message is judged by a classifier that learned it.
"""

import argparse
import os
import platform
import random
import sys
import time

from ktmail.services.spam.bayes import BayesStats, tokenize_hashed
from ktmail.services.spam.message import parse_file
from ktmail.services.spam.scoring import RuleSet, score


def corpus(directory):
    found = []
    for label in ("spam", "ham"):
        folder = os.path.join(directory, label)
        if not os.path.isdir(folder):
            sys.exit(f"spam_eval: {folder} is missing (expected DIR/spam/* and DIR/ham/*)")
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                found.append((path, label == "spam"))
    return found


class Trainer:
    """Bayes counts in a dict, trained like ISpamStatsStore.learn()."""

    def __init__(self):
        self.nspam = self.nham = 0
        self.counts = {}

    def learn(self, tokens, is_spam):
        if is_spam:
            self.nspam += 1
        else:
            self.nham += 1
        for t in tokens:
            s, h = self.counts.get(t, (0, 0))
            self.counts[t] = (s + 1, h) if is_spam else (s, h + 1)

    def stats(self, tokens):
        return BayesStats(nspam=self.nspam, nham=self.nham,
                          counts={t: self.counts[t] for t in tokens if t in self.counts})


def figures(results):
    """results: [(is_spam, verdict)] -> dict of the usual measures."""
    tp = sum(1 for s, v in results if s and v.is_spam)
    fn = sum(1 for s, v in results if s and not v.is_spam)
    fp = sum(1 for s, v in results if not s and v.is_spam)
    tn = sum(1 for s, v in results if not s and not v.is_spam)
    recall = tp / (tp + fn) if tp + fn else 0.0
    fp_rate = fp / (fp + tn) if fp + tn else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"spam": tp + fn, "ham": fp + tn, "tp": tp, "fn": fn, "fp": fp, "tn": tn,
            "recall": recall, "fp_rate": fp_rate, "precision": precision, "f1": f1}


def report(title, results, seconds, out, timings=()):
    f = figures(results)
    out.write(f"{title}\n")
    out.write(f"  messages       {f['spam']} spam, {f['ham']} ham\n")
    out.write(f"  spam recall    {f['recall'] * 100:.1f} %  ({f['tp']} caught, {f['fn']} missed)\n")
    out.write(f"  ham false pos. {f['fp_rate'] * 100:.2f} %  ({f['fp']} of {f['ham']})\n")
    out.write(f"  precision      {f['precision'] * 100:.1f} %\n")
    out.write(f"  F1             {f['f1']:.3f}\n")
    if seconds:
        out.write(f"  speed          {len(results) / seconds:.0f} messages/second "
                  f"({seconds / len(results) * 1000:.2f} ms each on average)\n")
    if timings:
        ordered = sorted(timings)
        median = ordered[len(ordered) // 2] * 1000
        p95 = ordered[int(len(ordered) * 0.95)] * 1000
        out.write(f"  CPU per msg    median {median:.2f} ms, 95th percentile {p95:.2f} ms, "
                  f"mean {sum(ordered) / len(ordered) * 1000:.2f} ms, slowest "
                  f"{ordered[-1] * 1000:.1f} ms\n")
    return f


def main(argv=None, out=sys.stdout):
    parser = argparse.ArgumentParser(prog="python -m bench.spam_eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory")
    parser.add_argument("--train-half", action="store_true",
                        help="train Bayes on a seeded random half, evaluate on the other half")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--required", type=float, default=None,
                        help="threshold (default: the filter's default)")
    args = parser.parse_args(argv)
    rules = RuleSet() if args.required is None else RuleSet(required_score=args.required)
    messages = corpus(args.directory)
    out.write(f"corpus {args.directory}: {sum(s for _, s in messages)} spam, "
              f"{sum(not s for _, s in messages)} ham; threshold {rules.required_score}\n")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out.write(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}, load average {load:.1f}\n\n")

    evaluate = messages
    trainer = None
    if args.train_half:
        rng = random.Random(args.seed)
        shuffled = list(messages)
        rng.shuffle(shuffled)
        train, evaluate = shuffled[::2], shuffled[1::2]
        trainer = Trainer()
        for path, is_spam in train:
            trainer.learn(tokenize_hashed(parse_file(path)), is_spam)
        out.write(f"Bayes trained on {trainer.nspam} spam + {trainer.nham} ham "
                  f"(random half, seed {args.seed}); figures below are for the OTHER half "
                  "only\n\n")

    plain, learned, timings = [], [], []
    started = time.perf_counter()
    for path, is_spam in evaluate:
        began = time.process_time()
        message = parse_file(path)
        plain.append((is_spam, score(message, rules)))
        timings.append(time.process_time() - began)
    plain_seconds = time.perf_counter() - started
    report("heuristic rules only (no Bayes, no DNS tests)", plain, plain_seconds, out, timings)
    if trainer is not None:
        timings = []
        started = time.perf_counter()
        for path, is_spam in evaluate:
            began = time.process_time()
            message = parse_file(path)
            stats = trainer.stats(tokenize_hashed(message))
            learned.append((is_spam, score(message, rules, stats)))
            timings.append(time.process_time() - began)
        out.write("\n")
        report("heuristic rules + Bayes (trained on the other half)", learned,
               time.perf_counter() - started, out, timings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
