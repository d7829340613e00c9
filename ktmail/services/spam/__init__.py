"""The spam filter (SPEC §1 spam row, issue 7).

- ``score(message, rules, stats=None, auth=None) -> SpamVerdict``: the pure
  core (scoring.py) over a ``ParsedMessage`` (message.py), the heuristic
  rules (rules.py), the Bayes statistics (bayes.py) and the SPF/DKIM/DMARC
  results (auth.py);
- ``SpamFilter``: the shell the delivery and mailboxes services call
  (filter.py): ``scan``, ``train``, ``forget_mailbox``.
"""

from ktmail.services.spam.filter import SpamFilter, analyse_file
from ktmail.services.spam.message import parse_bytes, parse_file
from ktmail.services.spam.scoring import ALL_RULES, RuleSet, check_rule_names, score

__all__ = ["ALL_RULES", "RuleSet", "SpamFilter", "analyse_file", "check_rule_names",
           "parse_bytes", "parse_file", "score"]
