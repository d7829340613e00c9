"""The gettext catalogues: complete, compiled, and chosen per request."""

import ast
import gettext
import os
import pathlib
import re

from twisted.trial import unittest

import ktmail.web
from ktmail.model import USERNAME_RULES
from ktmail.web.guards import USERNAME_RULES_TEXT
from ktmail.web.i18n import LOCALE_DIR, Catalogues, parse_accept_language

WEB = pathlib.Path(ktmail.web.__file__).parent


def source_messages():
    """Every literal given to _(), _.n() or N_() in ktmail/web."""
    found = set()
    for path in WEB.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = (node.func.id if isinstance(node.func, ast.Name)
                    else node.func.attr if isinstance(node.func, ast.Attribute) else "")
            if name in ("_", "N_", "n") and isinstance(node.args[0], ast.Constant):
                found.add(node.args[0].value)
    return found


def po_entries(lang):
    """{msgid: msgstr} from the .po (single-line entries, as `make messages` writes)."""
    text = (pathlib.Path(LOCALE_DIR) / lang / "LC_MESSAGES" / "ktmail.po").read_text("utf-8")
    entries = {}
    for block in text.split("\n\n"):
        mid = re.search(r'^msgid "(.*)"$', block, re.MULTILINE)
        mstr = re.search(r'^msgstr(?:\[0\])? "(.*)"$', block, re.MULTILINE)
        if mid and mid.group(1):
            def unquote(s):
                return s.replace('\\"', '"').replace("\\\\", "\\")
            entries[unquote(mid.group(1))] = unquote(mstr.group(1))
    return entries


class CatalogueTests(unittest.TestCase):
    def test_every_page_text_has_a_swedish_translation(self):
        """No text of the web pages is missing from the Swedish catalogue."""
        swedish = po_entries("sv")
        missing = sorted(m for m in source_messages() if not swedish.get(m))
        self.assertEqual(missing, [])

    def test_every_spam_rule_description_has_a_swedish_translation(self):
        """The webmail's "why is this spam" panel shows each rule's
        description translated: a new rule needs `make messages` and its
        Swedish text."""
        from ktmail.services.spam import ALL_RULES
        swedish = po_entries("sv")
        missing = sorted(r.description for r in ALL_RULES.values()
                         if not swedish.get(r.description))
        self.assertEqual(missing, [])

    def test_compiled_catalogues_match_their_sources(self):
        """The committed .mo files say what the .po files say (run `make
        locale` after editing a .po)."""
        for lang in ("sv", "en"):
            with open(os.path.join(LOCALE_DIR, lang, "LC_MESSAGES", "ktmail.mo"), "rb") as f:
                compiled = gettext.GNUTranslations(f)
            for msgid, msgstr in po_entries(lang).items():
                self.assertEqual(compiled.gettext(msgid), msgstr or msgid, (lang, msgid))

    def test_username_rules_are_marked_as_in_the_model(self):
        self.assertEqual(USERNAME_RULES_TEXT, USERNAME_RULES)
        sv = Catalogues().translator("sv")
        self.assertNotEqual(sv(USERNAME_RULES), USERNAME_RULES)

    def test_plurals(self):
        sv = Catalogues().translator("sv")
        self.assertEqual(sv.n("{n} of {limit} mailbox in use", "{n} of {limit} mailboxes in use",
                              1), "{n} av {limit} e-postlåda används")
        self.assertEqual(sv.n("{n} of {limit} mailbox in use", "{n} of {limit} mailboxes in use",
                              5), "{n} av {limit} e-postlådor används")


class NegotiationTests(unittest.TestCase):
    def test_accept_language_order_and_quality(self):
        self.assertEqual(parse_accept_language("fi;q=0.9, en-GB, sv;q=0.95, de;q=0"),
                         ["en-gb", "sv", "fi"])
        self.assertEqual(parse_accept_language(""), [])
        self.assertEqual(parse_accept_language("x;q=bad, en"), ["en"])

    def test_choice(self):
        c = Catalogues()
        self.assertEqual(c.choose(None, "en-US,en;q=0.9"), "en")
        self.assertEqual(c.choose(None, "fi-FI,fi;q=0.9,sv;q=0.8,en;q=0.7"), "sv")
        self.assertEqual(c.choose(None, "fi"), "sv")
        self.assertEqual(c.choose(None, None), "sv")
        self.assertEqual(c.choose("en", "sv"), "en")
        self.assertEqual(c.choose("xx", "en"), "en")
