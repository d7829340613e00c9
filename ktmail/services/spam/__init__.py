"""The spam filter (SPEC §1 spam row, issue 7).

``score(message, rules, stats, auth)`` is the pure core (scoring.py);
``SpamFilter`` is the shell that reads a message off the reactor thread,
asks the store what the Bayes classifier learned, checks SPF/DKIM/DMARC
through an injected resolver and returns a ``model.SpamVerdict``.
"""

from ktmail.services.spam.scoring import ALL_RULES, RuleSet, check_rule_names, score

__all__ = ["ALL_RULES", "RuleSet", "check_rule_names", "score"]
