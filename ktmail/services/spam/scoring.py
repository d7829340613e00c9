"""The pure scoring core: ``score(message, rules, stats, auth) -> SpamVerdict``.

``RuleSet`` is the configured set of rules (built-in defaults with the
``[spam_scores]`` overrides, and the ``required_score`` threshold). The
Bayes classifier's opinion enters as one more rule, one of the ``BAYES_xx``
buckets (SpamAssassin's names; its scores below 0.6, stronger above, where
the classifier trained by this service's own users is near certain). No I/O, no clock.
"""

import attrs

from ktmail.errors import ValidationError
from ktmail.model import RuleHit, SpamVerdict
from ktmail.services.spam.bayes import spam_probability
from ktmail.services.spam.facts import Facts
from ktmail.services.spam.rules import RULES, Rule


def N_(text):
    """Marks a rule description for the web pages' catalogue (``make
    messages``); the webmail shows it translated."""
    return text


# (name, lower bound inclusive, upper bound exclusive, default score, description)
BAYES_BUCKETS = (
    ("BAYES_00", 0.00, 0.01, -1.9, N_("Bayes spam probability is 0 to 1%")),
    ("BAYES_05", 0.01, 0.05, -0.5, N_("Bayes spam probability is 1 to 5%")),
    ("BAYES_20", 0.05, 0.20, -0.1, N_("Bayes spam probability is 5 to 20%")),
    ("BAYES_40", 0.20, 0.40, 0.0, N_("Bayes spam probability is 20 to 40%")),
    ("BAYES_50", 0.40, 0.60, 0.8, N_("Bayes spam probability is 40 to 60%")),
    ("BAYES_60", 0.60, 0.80, 1.5, N_("Bayes spam probability is 60 to 80%")),
    ("BAYES_80", 0.80, 0.95, 2.5, N_("Bayes spam probability is 80 to 95%")),
    ("BAYES_95", 0.95, 0.99, 3.5, N_("Bayes spam probability is 95 to 99%")),
    ("BAYES_99", 0.99, 0.999, 4.5, N_("Bayes spam probability is 99 to 99.9%")),
    # SpamBayes itself calls 0.9 spam; at 0.999 the learned opinion decides alone
    ("BAYES_999", 0.999, 1.01, 5.0, N_("Bayes spam probability is 99.9 to 100%")),
)


def _bayes_rule(low, high):
    return lambda facts: facts.bayes is not None and low <= facts.bayes < high


BAYES_RULES = tuple(Rule(name=name, score=default, description=description,
                         test=_bayes_rule(low, high))
                    for name, low, high, default, description in BAYES_BUCKETS)

#: every rule by name, in evaluation order
ALL_RULES = {r.name: r for r in list(RULES) + list(BAYES_RULES)}
DEFAULT_REQUIRED_SCORE = 5.0


@attrs.frozen
class RuleSet:
    """The rules in force, with their configured scores and the threshold."""

    required_score: float = DEFAULT_REQUIRED_SCORE
    #: name -> score overriding the default (0 switches a rule off)
    overrides: dict = attrs.field(factory=dict, eq=False)

    @classmethod
    def from_config(cls, spam_config):
        """Build from a config.SpamConfig; ValidationError names an unknown rule
        as ``spam_scores.NAME``."""
        overrides = spam_config.score_overrides()
        check_rule_names(overrides)
        return cls(required_score=spam_config.required_score, overrides=overrides)

    def score_of(self, rule):
        return self.overrides.get(rule.name, rule.score)

    def active(self):
        """[(rule, score)] of every rule whose score is not 0."""
        return [(r, self.score_of(r)) for r in ALL_RULES.values() if self.score_of(r) != 0]


def check_rule_names(names):
    """Raise ValidationError for the first name that is not a rule."""
    for name in sorted(names):
        if name not in ALL_RULES:
            close = [n for n in ALL_RULES if n.startswith(name[:4].upper())][:5]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValidationError(
                f"spam_scores.{name}: there is no spam rule of that name{hint}; "
                "`ktmail-admin spam rules` lists them.", field=f"spam_scores.{name}")


def score(message, rules, stats=None, auth=None):
    """Judge one ParsedMessage.

    ``stats``: the BayesStats of the message's tokens (or None: no Bayes);
    ``auth``: the authentication results (or None: not checked).
    """
    facts = Facts(message, auth)
    facts.bayes = spam_probability(stats)
    hits = []
    for rule, points in rules.active():
        try:
            fired = rule.test(facts)
        except Exception:  # noqa: BLE001 - one broken rule must not lose the verdict
            fired = False
        if fired:
            hits.append(RuleHit(name=rule.name, score=points, description=rule.description))
    total = round(sum(h.score for h in hits), 3)
    hits.sort(key=lambda h: (-h.score, h.name))
    return SpamVerdict(is_spam=total >= rules.required_score, score=total,
                       required=rules.required_score, hits=tuple(hits))
