"""The languages of the web pages: gettext catalogues and the choice of one.

Owns ``ktmail/locale/<lang>/LC_MESSAGES/ktmail.mo`` (compiled from the
``.po`` next to it with ``make locale``; both are committed, so a fresh
clone runs without gettext tools). Source strings are English; a string
missing from a catalogue shows in English rather than failing.

The language of a request: the ``ktmail_lang`` cookie set by the visible
switch, else the best match in ``Accept-Language`` (RFC 9110 §12.5.4),
else Swedish, the customers' language. Adding Finnish is adding
``fi`` to LANGUAGES and its catalogue.
"""

import gettext
import os

#: code -> the language's name in that language (for the switch)
LANGUAGES = {"sv": "Svenska", "en": "English"}
DEFAULT_LANGUAGE = "sv"
LANG_COOKIE = b"ktmail_lang"
LOCALE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "locale")


def parse_accept_language(header):
    """-> [language codes] best first, from an Accept-Language value."""
    ranked = []
    for position, item in enumerate((header or "").split(",")):
        tag, _, params = item.strip().partition(";")
        tag = tag.strip().lower()
        if not tag:
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, position, tag))
    ranked.sort()
    return [tag for _, _, tag in ranked]


class Translator:
    """``_("text")`` for one language; ``_.n(singular, plural, n)``."""

    def __init__(self, lang, translations):
        self.lang = lang
        self._t = translations

    def __call__(self, message):
        return self._t.gettext(message)

    def n(self, singular, plural, count):
        return self._t.ngettext(singular, plural, count)


class Catalogues:
    def __init__(self, locale_dir=LOCALE_DIR, languages=LANGUAGES):
        self.languages = dict(languages)
        self._translators = {}
        for lang in self.languages:
            try:
                with open(os.path.join(locale_dir, lang, "LC_MESSAGES", "ktmail.mo"),
                          "rb") as f:
                    translations = gettext.GNUTranslations(f)
            except OSError:
                translations = gettext.NullTranslations()
            self._translators[lang] = Translator(lang, translations)

    def choose(self, cookie=None, accept_language=None):
        if cookie in self.languages:
            return cookie
        for tag in parse_accept_language(accept_language):
            if tag in self.languages:
                return tag
            primary = tag.split("-")[0]
            if primary in self.languages:
                return primary
        return DEFAULT_LANGUAGE

    def translator(self, lang):
        return self._translators.get(lang) or self._translators[DEFAULT_LANGUAGE]

    def for_request(self, request):
        cookie = request.getCookie(LANG_COOKIE)
        accept = request.getHeader(b"accept-language")
        lang = self.choose(cookie.decode("ascii", "replace") if cookie else None,
                           accept.decode("latin-1") if accept else None)
        return self.translator(lang)
