"""Client set-up documents: Thunderbird autoconfig, Outlook Autodiscover, the
help page and the DNS records, all from the live configuration."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

from twisted.trial import unittest

from ktmail.config import DEFAULT_DOMAINS
from ktmail.services.clientsetup import ClientSettings, dns_records, listener_port
from ktmail.web.clientconfig import AUTOCONFIG_PLACEHOLDER
from tests.web.support import HOST, PORTS, WebHarness

# The clientConfig v1.1 format as Thunderbird's documentation describes it
# (wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat).
SOCKET_TYPES = {"plain", "SSL", "STARTTLS"}
AUTHENTICATIONS = {"password-cleartext", "password-encrypted", "NTLM", "GSAPI",
                   "client-IP-address", "TLS-client-cert", "OAuth2", "none"}
SERVER_CHILDREN = ["hostname", "port", "socketType", "username", "authentication"]
PROVIDER_ORDER = ["domain", "displayName", "displayShortName", "incomingServer",
                  "outgoingServer", "documentation"]


def check_thunderbird_autoconfig(testcase, body):
    """Assert ``body`` is a clientConfig v1.1 document Thunderbird accepts;
    -> {(tag, type): {child: text}} of its servers."""
    root = ET.fromstring(body)
    testcase.assertEqual(root.tag, "clientConfig")
    testcase.assertEqual(root.get("version"), "1.1")
    providers = root.findall("emailProvider")
    testcase.assertEqual(len(providers), 1)
    provider = providers[0]
    testcase.assertTrue(provider.get("id"))
    tags = [child.tag for child in provider]
    testcase.assertEqual(tags, sorted(tags, key=PROVIDER_ORDER.index), "element order")
    testcase.assertTrue(provider.findall("domain"))
    testcase.assertTrue(provider.findtext("displayName"))
    testcase.assertTrue(provider.findtext("displayShortName"))
    servers = {}
    for element in provider:
        if element.tag not in ("incomingServer", "outgoingServer"):
            continue
        kinds = {"incomingServer": {"imap", "pop3"}, "outgoingServer": {"smtp"}}
        testcase.assertIn(element.get("type"), kinds[element.tag])
        children = [c.tag for c in element if c.tag != "pop3"]
        testcase.assertEqual(children, SERVER_CHILDREN)
        values = {c.tag: c.text for c in element}
        testcase.assertTrue(values["hostname"])
        testcase.assertTrue(values["port"].isdigit() and 0 < int(values["port"]) < 65536)
        testcase.assertIn(values["socketType"], SOCKET_TYPES)
        testcase.assertIn(values["authentication"], AUTHENTICATIONS)
        testcase.assertTrue(values["username"])
        servers[element.tag, element.get("type")] = values
    testcase.assertIn(("incomingServer", "imap"), servers)
    testcase.assertIn(("outgoingServer", "smtp"), servers)
    incoming = [s for s in provider if s.tag == "incomingServer"]
    testcase.assertEqual(incoming[0].get("type"), "imap", "IMAP is offered first")
    return servers


class AutoconfigTests(unittest.TestCase):
    def setUp(self):
        self.h = WebHarness(self)
        self.h.customer("kund1001")
        self.h.mailbox("alice_u", "alice@brev.fi")
        self.browser = self.h.browser(secure=False)

    def test_every_domain_both_paths(self):
        """Both autoconfig paths answer a valid document for every hosted
        domain, with the live hosts and ports and implicit TLS."""
        self.assertEqual(self.h.config.domains, DEFAULT_DOMAINS)
        for domain in DEFAULT_DOMAINS:
            for path in ("/.well-known/autoconfig/mail/config-v1.1.xml",
                         "/mail/config-v1.1.xml"):
                page = self.browser.get(f"{path}?emailaddress=someone%40{domain}",
                                        headers={"Host": [f"autoconfig.{domain}"]})
                self.assertEqual(page.status, 200)
                self.assertEqual(page.header("content-type"), "application/xml; charset=utf-8")
                servers = check_thunderbird_autoconfig(self, page.body.encode())
                imap = servers["incomingServer", "imap"]
                self.assertEqual((imap["hostname"], imap["port"], imap["socketType"]),
                                 ("imap.example.test", str(PORTS["imap"]), "SSL"))
                pop3 = servers["incomingServer", "pop3"]
                self.assertEqual((pop3["hostname"], pop3["port"], pop3["socketType"]),
                                 ("imap.example.test", str(PORTS["pop3"]), "SSL"))
                smtp = servers["outgoingServer", "smtp"]
                self.assertEqual((smtp["hostname"], smtp["port"], smtp["socketType"]),
                                 ("smtp.example.test", str(PORTS["submission"]), "SSL"))
                self.assertEqual(imap["username"], AUTOCONFIG_PLACEHOLDER)
                root = ET.fromstring(page.body)
                self.assertEqual(root.find("emailProvider").get("id"), domain)
                self.assertEqual([d.text for d in root.iter("domain")], list(DEFAULT_DOMAINS))

    def test_the_real_username_of_a_mailbox(self):
        """For a mailbox's address the document names its username, which is
        not the address."""
        page = self.browser.get("/.well-known/autoconfig/mail/config-v1.1.xml"
                                "?emailaddress=Alice%40Brev.fi")
        servers = check_thunderbird_autoconfig(self, page.body.encode())
        for server in servers.values():
            self.assertEqual(server["username"], "alice_u")

    def test_smoke_shape(self):
        """What the acceptance smoke looks for is there."""
        page = self.browser.get("/.well-known/autoconfig/mail/config-v1.1.xml"
                                "?emailaddress=alice@brev.fi")
        for want in ("<clientConfig", "imap.example.test", str(PORTS["imap"]),
                     str(PORTS["submission"])):
            self.assertIn(want, page.body)

    def test_a_switched_off_listener_is_not_advertised(self):
        """With POP3 off, autoconfig offers IMAP and SMTP only."""
        h = WebHarness(self, extra_config="")
        object.__setattr__(h.config.listen, "pop3", "")
        from ktmail.web.app import build_root
        h.root = build_root(h.config, h.clock, h.accounts, h.auth, h.mail)
        page = h.browser().get("/mail/config-v1.1.xml?emailaddress=x@brev.fi")
        servers = check_thunderbird_autoconfig(self, page.body.encode())
        self.assertNotIn(("incomingServer", "pop3"), servers)

    def test_odd_input_is_harmless(self):
        """Garbage addresses get the generic document, escaped."""
        page = self.browser.get("/mail/config-v1.1.xml?emailaddress=%3Cscript%3E%40x")
        self.assertEqual(page.status, 200)
        self.assertNotIn("<script>", page.body)
        check_thunderbird_autoconfig(self, page.body.encode())
        page = self.browser.get("/mail/config-v1.1.xml")
        check_thunderbird_autoconfig(self, page.body.encode())


AUTODISCOVER_REQUEST = """<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>{}</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>"""
NS = {"a": "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006",
      "o": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"}


class AutodiscoverTests(unittest.TestCase):
    def setUp(self):
        self.h = WebHarness(self)
        self.h.customer("kund1001")
        self.h.mailbox("alice_u", "alice@brev.fi")
        self.browser = self.h.browser()

    def discover(self, body, path="/autodiscover/autodiscover.xml"):
        return self.browser.request("POST", path, data=body.encode(),
                                    headers={"Content-Type": ["text/xml"]})

    def test_outlook_gets_imap_pop3_smtp_with_the_username(self):
        """POX Autodiscover answers the three protocols with SSL, the live
        hosts and ports, and the mailbox's username."""
        page = self.discover(AUTODISCOVER_REQUEST.format("alice@brev.fi"))
        self.assertEqual(page.status, 200)
        root = ET.fromstring(page.body)
        self.assertEqual(root.tag, f"{{{NS['a']}}}Autodiscover")
        account = root.find("o:Response/o:Account", NS)
        self.assertEqual(account.findtext("o:AccountType", namespaces=NS), "email")
        self.assertEqual(account.findtext("o:Action", namespaces=NS), "settings")
        protocols = {p.findtext("o:Type", namespaces=NS): p
                     for p in account.findall("o:Protocol", NS)}
        self.assertEqual(sorted(protocols), ["IMAP", "POP3", "SMTP"])
        for kind, host, port in (("IMAP", "imap.example.test", PORTS["imap"]),
                                 ("SMTP", "smtp.example.test", PORTS["submission"])):
            p = protocols[kind]
            self.assertEqual(p.findtext("o:Server", namespaces=NS), host)
            self.assertEqual(p.findtext("o:Port", namespaces=NS), str(port))
            self.assertEqual(p.findtext("o:SSL", namespaces=NS), "on")
            self.assertEqual(p.findtext("o:LoginName", namespaces=NS), "alice_u")

    def test_unknown_address_and_bad_requests(self):
        """An unknown address gets the settings with the address as login;
        junk, DTDs and entities get an error document."""
        page = self.discover(AUTODISCOVER_REQUEST.format("nobody@brev.fi"),
                             path="/Autodiscover/Autodiscover.xml")
        self.assertIn("<LoginName>nobody@brev.fi</LoginName>", page.body)
        for body in ("not xml", '<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
                     "<Autodiscover/>"):
            page = self.discover(body)
            self.assertEqual(page.status, 400)
            self.assertIn("<ErrorCode>600</ErrorCode>", page.body)


class HelpPageTests(unittest.TestCase):
    def test_help_shows_the_live_settings_in_both_languages(self):
        """/help names the live hosts and ports, in Swedish and English."""
        h = WebHarness(self)
        page = h.browser().get("/help")
        self.assertEqual(page.status, 200)
        text = page.text()
        self.assertIn(f"imap.example.test port {PORTS['imap']} , SSL/TLS", text)
        self.assertIn(f"imap.example.test port {PORTS['pop3']} , SSL/TLS", text)
        self.assertIn(f"smtp.example.test port {PORTS['submission']} , SSL/TLS", text)
        self.assertIn("e-postlådans användarnamn (inte e-postadressen)", text)
        for section in ("Thunderbird", "Windows E-post och Outlook", "iPhone och iPad",
                        "Android"):
            self.assertIn(section, text)
        english = h.browser(language="en").get("/help").text()
        self.assertIn("Setting up a mail program", english)
        self.assertIn("Windows Mail and Outlook", english)


class ListenerPortTests(unittest.TestCase):
    def test_ports_from_endpoint_descriptions(self):
        cases = [("ssl:993", 993), ("tcp:2525:interface=127.0.0.1", 2525),
                 ("ssl:port=995:interface=::", 995), ("haproxy:ssl:465", 465),
                 ("tls:/etc/ktmail/certs:port=9993", 9993), ("systemd:domain=INET:index=0", 993),
                 ("", None)]
        for description, port in cases:
            self.assertEqual(listener_port(description, "imap"), port, description)


class DnsRecordTests(unittest.TestCase):
    def settings(self):
        return ClientSettings(hostname="mail.ktnet.fi", incoming_host="imap.ktnet.fi",
                              outgoing_host="smtp.ktnet.fi", imap_port=993, pop3_port=None,
                              submission_port=465, web_port=443, domains=DEFAULT_DOMAINS)

    def test_records_for_a_domain(self):
        """MX, SPF, DMARC, RFC 6186 SRV (off services with a '.' target),
        autoconfig/autodiscover names, and long DKIM keys split in 255s."""
        lines = dns_records("brev.fi", self.settings(),
                            dkim=[("ktmail2026", "v=DKIM1; k=rsa; p=" + "A" * 400)])
        zone = "\n".join(lines)
        self.assertIn("brev.fi.\t3600\tIN\tMX\t10 mail.ktnet.fi.", zone)
        self.assertIn('brev.fi.\t3600\tIN\tTXT\t"v=spf1 mx -all"', zone)
        self.assertIn("_dmarc.brev.fi.\t3600\tIN\tTXT\t\"v=DMARC1;", zone)
        self.assertIn("_imaps._tcp.brev.fi.\t3600\tIN\tSRV\t0 1 993 imap.ktnet.fi.", zone)
        self.assertIn("_pop3s._tcp.brev.fi.\t3600\tIN\tSRV\t0 0 0 .", zone)
        self.assertIn("_submissions._tcp.brev.fi.\t3600\tIN\tSRV\t0 1 465 smtp.ktnet.fi.",
                      zone)
        self.assertIn("_submission._tcp.brev.fi.\t3600\tIN\tSRV\t0 0 0 .", zone)
        self.assertIn("autoconfig.brev.fi.\t3600\tIN\tCNAME\tmail.ktnet.fi.", zone)
        self.assertIn("autodiscover.brev.fi.\t3600\tIN\tCNAME\tmail.ktnet.fi.", zone)
        (dkim,) = [line for line in lines if line.startswith("ktmail2026._domainkey.")]
        strings = dkim.split("\t")[-1].split('" "')
        self.assertEqual(len(strings), 2)
        self.assertTrue(all(len(s.strip('"')) <= 255 for s in strings))

    def test_ktmail_admin_dns(self):
        """`ktmail-admin dns DOMAIN` prints the zone lines from the config;
        a foreign domain is refused with exit 1."""
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        path = os.path.join(root, "ktmail.ini")
        with open(path, "w") as f:
            f.write(f"[ktmail]\nhostname = {HOST}\n[listen]\nsmtp =\nweb =\nsubmission =\n"
                    "imap = tcp:1993\npop3 =\n")

        def admin(*args):
            return subprocess.run([sys.executable, "-m", "ktmail.cli", "--config", path, *args],
                                  capture_output=True, text=True, timeout=120)
        r = admin("dns", "Brev.fi")
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertIn(f"brev.fi.\t3600\tIN\tMX\t10 {HOST}.", r.stdout)
        self.assertIn(f"_imaps._tcp.brev.fi.\t3600\tIN\tSRV\t0 1 1993 {HOST}.", r.stdout)
        # the DKIM record is the signing key's (made on first use), as `dkim show` prints it
        (dkim,) = [line for line in r.stdout.splitlines()
                   if line.startswith("ktmail._domainkey.brev.fi.")]
        shown = admin("dkim", "show", "brev.fi").stdout
        key = shown.split("p=")[1].split('"')[0]
        self.assertIn("v=DKIM1; k=rsa; p=" + key, dkim)
        r = admin("dns", "example.com")
        self.assertEqual(r.returncode, 1)
        self.assertIn("not one of the hosted domains", r.stderr)
