"""Present-day spam and phishing (crafted after real 2024-2026 campaigns)
is spam on the heuristic rules alone, while ordinary present-day mail of the
same kinds is not."""

from twisted.trial import unittest

from ktmail.services.spam import RuleSet, parse_bytes, score
from ktmail.services.spam.auth import AuthResults
from tests.services.spam_samples import build


def received(ip="185.220.101.7", rdns="", helo="mail.example.net"):
    paren = f"{rdns} [{ip}]" if rdns else f"[{ip}]"
    return ("Received", (f"from {helo} ({paren}) by mx.ktnet.fi with ESMTP; "
                         "Tue, 03 Mar 2026 10:00:05 +0000"))


def message(headers, body, content_type="text/html; charset=utf-8"):
    base = [received(), ("Date", "Tue, 03 Mar 2026 09:59:58 +0000"),
            ("To", "matti@sboksi.fi"), ("MIME-Version", "1.0"),
            ("Content-Type", content_type)]
    names = {n.lower() for n, _ in headers}
    return build([h for h in base if h[0].lower() not in names] + headers, body)


PARCEL_FI = message([
    ("From", "Posti <noreply.posti.fi.seuranta@gmail.com>"),
    ("Subject", "Pakettisi odottaa: vahvista toimitus"),
    ("Message-ID", "<a1@mail.gmail.com>")],
    """<html><body><p>Hyvä asiakas,</p>
<p>pakettisi on pysäytetty, koska toimitusmaksu (2,99 EUR) on maksamatta.
Maksa toimitusmaksu 48 tunnin kuluessa, muuten paketti palautetaan.</p>
<p><a href="https://posti-seuranta.delivery-fi.top/maksa">https://www.posti.fi/seuranta</a></p>
</body></html>""")

MAILBOX_FULL = message([
    ("From", "\"IT Service Desk\" <helpdesk@ktnet-support.click>"),
    ("Subject", "Mailbox storage is full - action required"),
    ("Message-ID", "<20260303.1@ktnet-support.click>")],
    """<html><body><p>Dear e-mail user,</p>
<p>Your mailbox is full (99% of quota) and incoming messages are held.
Verify your account within 24 hours to avoid suspension of your mailbox.</p>
<form action="http://185.220.101.7/owa/"><input name="u"><input type="password" name="p">
<button>Sign in to restore</button></form></body></html>""")

INVOICE_ATTACHMENT = message([
    ("From", "Accounts <billing@invoices-portal.example.net>"),
    ("Subject", "Re: Overdue invoice 4471"),
    ("Message-ID", "<77@invoices-portal.example.net>")],
    "--M\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease see the attached invoice and "
    "pay today.\r\n--M\r\nContent-Type: text/html; name=\"Invoice_4471.pdf.html\"\r\n"
    "Content-Disposition: attachment; filename=\"Invoice_4471.pdf.html\"\r\n\r\n"
    "<html><script>location='https://login.example.top/'</script></html>\r\n--M--\r\n",
    content_type='multipart/mixed; boundary="M"')

BANK_SPOOF = message([
    ("From", "Nordea <asiakaspalvelu@nordea.fi>"),
    ("Subject", "Tilisi on lukittu"),
    ("Message-ID", "<x9@nordea.fi>")],
    """<html><body><p>Hyvä asiakas,</p><p>tilisi on lukittu epäilyttävän toiminnan vuoksi.
Vahvista henkilöllisyytesi 24 tunnin kuluessa:</p>
<p><a href="https://bit.ly/3nordea">https://www.nordea.fi/kirjaudu</a></p></body></html>""")
BANK_AUTH = AuthResults(spf="fail", spf_domain="nordea.fi", dmarc=("fail", "reject"),
                        from_domain="nordea.fi")

# the real thing: a parcel notice and a bank letter that are what they say
REAL_PARCEL = message([
    ("From", "Posti <noreply@posti.fi>"),
    ("Subject", "Lähetyksesi JJFI12345678 on noudettavissa"),
    ("Message-ID", "<n1@posti.fi>"),
    ("List-Unsubscribe", "<https://www.posti.fi/viestit/peru>")],
    """<html><body><p>Hei,</p><p>lähetyksesi JJFI12345678 on noudettavissa
Pakettiautomaatti Kauppakeskus Iso Omena -pisteestä 10.3.2026 asti.</p>
<p>Seuraa lähetystä: <a href="https://www.posti.fi/seuranta#JJFI12345678">posti.fi</a></p>
</body></html>""")
REAL_PARCEL_AUTH = AuthResults(spf="pass", spf_domain="posti.fi",
                               dkim=(("posti.fi", "pass"),), dmarc=("pass", "reject"),
                               from_domain="posti.fi")


class ModernMailTests(unittest.TestCase):
    def verdict(self, raw, auth=None):
        return score(parse_bytes(raw), RuleSet(), auth=auth)

    def test_phishing_is_spam_without_bayes(self):
        """Parcel-fee, mailbox-full, HTML-attachment and bank-spoof lures are
        spam on the heuristics alone."""
        for name, raw, auth in (("parcel", PARCEL_FI, None), ("mailbox", MAILBOX_FULL, None),
                                ("invoice", INVOICE_ATTACHMENT, None),
                                ("bank", BANK_SPOOF, BANK_AUTH)):
            verdict = self.verdict(raw, auth)
            self.assertTrue(verdict.is_spam, f"{name}: {verdict.header_value()}")

    def test_real_notices_are_ham(self):
        """A genuine parcel notice (authenticated, List-Unsubscribe) is ham."""
        verdict = self.verdict(REAL_PARCEL, REAL_PARCEL_AUTH)
        self.assertFalse(verdict.is_spam, verdict.header_value())
        self.assertLess(verdict.score, 1.0, verdict.header_value())
