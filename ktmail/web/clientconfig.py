"""Client set-up: Thunderbird autoconfig, Microsoft Autodiscover (POX), Apple
configuration profiles and the /help page.

Everything a client is told comes from ``ClientSettings`` (the running
configuration: ``[clients]`` hosts, the ports the listeners are configured
on). When the address asked about belongs to a mailbox, the answer names
that mailbox's username, which is not its address; otherwise it carries
the ``%EMAILLOCALPART%`` placeholder (Thunderbird) or the address itself
(Autodiscover), and the user corrects it. No document contains a password.
XML is built with ElementTree/plistlib, so names are escaped by
construction; request XML is parsed only when small and without DTDs.
"""

import plistlib
import uuid
import xml.etree.ElementTree as ET

import attrs
from twisted.web.template import tags

from ktmail import errors
from ktmail.model import Address
from ktmail.web import guards, pages

#: Thunderbird autoconfig: https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat
AUTOCONFIG_PLACEHOLDER = "%EMAILLOCALPART%"
AUTODISCOVER_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
AUTODISCOVER_OUTLOOK_NS = ("http://schemas.microsoft.com/exchange/autodiscover/outlook/"
                           "responseschema/2006a")
MAX_AUTODISCOVER_REQUEST = 16 * 1024


def _xml(root):
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")


def thunderbird_autoconfig(settings, domain, username=None, display_name="Mail"):
    """The clientConfig v1.1 document: IMAP first, then POP3, then SMTP,
    each with implicit TLS (``SSL``) and a normal password."""
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    for name in settings.domains:
        ET.SubElement(provider, "domain").text = name
    ET.SubElement(provider, "displayName").text = f"{display_name} ({domain})"
    ET.SubElement(provider, "displayShortName").text = domain
    login = username or AUTOCONFIG_PLACEHOLDER

    def server(tag, kind, host, port):
        element = ET.SubElement(provider, tag, type=kind)
        ET.SubElement(element, "hostname").text = host
        ET.SubElement(element, "port").text = str(port)
        ET.SubElement(element, "socketType").text = "SSL"
        ET.SubElement(element, "username").text = login
        ET.SubElement(element, "authentication").text = "password-cleartext"
        return element

    if settings.imap_port:
        server("incomingServer", "imap", settings.incoming_host, settings.imap_port)
    if settings.pop3_port:
        pop = server("incomingServer", "pop3", settings.incoming_host, settings.pop3_port)
        options = ET.SubElement(pop, "pop3")
        ET.SubElement(options, "leaveMessagesOnServer").text = "true"
    if settings.submission_port:
        server("outgoingServer", "smtp", settings.outgoing_host, settings.submission_port)
    documentation = ET.SubElement(
        provider, "documentation",
        url=settings.web_url + "/help")
    ET.SubElement(documentation, "descr", lang="en").text = "Mail program settings"
    ET.SubElement(documentation, "descr", lang="sv").text = "Inställningar för e-postprogram"
    return _xml(root)


def autodiscover_request_address(body):
    """The <EMailAddress> of an Outlook Autodiscover request, or None."""
    if len(body) > MAX_AUTODISCOVER_REQUEST or b"<!DOCTYPE" in body.upper() \
            or b"<!ENTITY" in body.upper():
        return None
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == "EMailAddress" and element.text:
            return element.text.strip()
    return None


def autodiscover_response(settings, address, username=None):
    """Outlook POX Autodiscover answer (MS-OXDSCLI) with IMAP, POP3, SMTP."""
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE_NS)
    response = ET.SubElement(root, "Response", xmlns=AUTODISCOVER_OUTLOOK_NS)
    account = ET.SubElement(response, "Account")
    ET.SubElement(account, "AccountType").text = "email"
    ET.SubElement(account, "Action").text = "settings"
    login = username or address

    def protocol(kind, host, port):
        element = ET.SubElement(account, "Protocol")
        for name, value in (("Type", kind), ("Server", host), ("Port", str(port)),
                            ("LoginName", login), ("DomainRequired", "off"), ("SPA", "off"),
                            ("SSL", "on"), ("Encryption", "SSL"), ("AuthRequired", "on")):
            ET.SubElement(element, name).text = value

    if settings.imap_port:
        protocol("IMAP", settings.incoming_host, settings.imap_port)
    if settings.pop3_port:
        protocol("POP3", settings.incoming_host, settings.pop3_port)
    if settings.submission_port:
        protocol("SMTP", settings.outgoing_host, settings.submission_port)
    return _xml(root)


def autodiscover_error(code="600", message="Invalid Request"):
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE_NS)
    response = ET.SubElement(root, "Response")
    error = ET.SubElement(response, "Error")
    ET.SubElement(error, "ErrorCode").text = code
    ET.SubElement(error, "Message").text = message
    return _xml(root)


def apple_profile(settings, mailbox, organization="Mail"):
    """An unsigned .mobileconfig with one mail account (IMAP in, SMTP out),
    no password: the device asks for it. The identifiers are stable, so
    installing it again replaces the earlier profile."""
    address = str(mailbox.address)
    base = f"{settings.hostname}.mail.{mailbox.username}"
    reverse = ".".join(reversed(settings.hostname.split(".")))
    account = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{reverse}.mail.{mailbox.username}.account",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, base + ".account")).upper(),
        "PayloadDisplayName": address,
        "EmailAccountDescription": address,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": address,
        "IncomingMailServerHostName": settings.incoming_host,
        "IncomingMailServerPortNumber": settings.imap_port or 993,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerUsername": mailbox.username,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": settings.outgoing_host,
        "OutgoingMailServerPortNumber": settings.submission_port or 465,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": mailbox.username,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingPasswordSameAsIncomingPassword": True,
        "SMIMEEnabled": False,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{reverse}.mail.{mailbox.username}",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, base)).upper(),
        "PayloadDisplayName": f"{organization}: {address}",
        "PayloadDescription": f"{address} ({mailbox.username})",
        "PayloadOrganization": organization,
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)


@attrs.define
class ClientConfigPages:
    """Autoconfig, Autodiscover and /help: public, no session, no state.
    WebRoot routes the well-known paths here."""

    web: guards.WebContext
    accounts: object        # services.accounts.AccountService
    settings: object        # services.clientsetup.ClientSettings

    async def _username_for(self, text):
        """The username of the mailbox with address ``text``, else None."""
        try:
            address = Address.parse(text or "")
            mailbox = await self.accounts.find_mailbox_by_address(address)
        except errors.KtmailError:
            return None, None
        return mailbox.username, address

    def _domain_for(self, address, request):
        if address is not None and address.domain in self.settings.domains:
            return address.domain
        host = (request.getHeader(b"host") or b"").decode("ascii", "replace").lower()
        host = host.split(":")[0].removeprefix("autoconfig.").removeprefix("autodiscover.")
        if host in self.settings.domains:
            return host
        return self.settings.domains[0]

    async def autoconfig(self, request):
        values = request.args.get(b"emailaddress") or [b""]
        text = values[0].decode("utf-8", "replace")
        username, address = await self._username_for(text)
        if address is None:
            try:
                address = Address.parse(text)
            except errors.KtmailError:
                address = None
        domain = self._domain_for(address, request)
        request.setHeader(b"content-type", b"application/xml; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return thunderbird_autoconfig(self.settings, domain, username)

    async def autodiscover(self, request):
        request.setHeader(b"content-type", b"application/xml; charset=utf-8")
        body = request.content.read(MAX_AUTODISCOVER_REQUEST + 1) if request.content else b""
        text = autodiscover_request_address(body)
        if not text:
            request.setResponseCode(400)
            return autodiscover_error()
        username, address = await self._username_for(text)
        return autodiscover_response(self.settings, str(address) if address else text,
                                     username)

    def help(self, request):
        _ = self.web.translator(request)
        return pages.render(request, pages.layout(
            _, title=_("Setting up a mail program"), section=_("Help"),
            content=help_content(_, self.settings), here="/help", home="/"))


def _settings_table(_, rows):
    return tags.table(class_="settings")(
        tags.tbody(*[tags.tr(tags.th(name, scope="row"), tags.td(value))
                     for name, value in rows]))


def help_content(_, s):
    """The help page body: the same facts autoconfig gives, for people."""
    ssl = _("SSL/TLS")
    username = tags.em(_("the mailbox's username (not the e-mail address)"))
    incoming = []
    if s.imap_port:
        incoming.append((_("IMAP server (recommended)"),
                         [tags.code(s.incoming_host), " ", _("port"), " ",
                          tags.code(str(s.imap_port)), ", ", ssl]))
    if s.pop3_port:
        incoming.append((_("POP3 server"),
                         [tags.code(s.incoming_host), " ", _("port"), " ",
                          tags.code(str(s.pop3_port)), ", ", ssl]))
    outgoing = []
    if s.submission_port:
        outgoing.append((_("SMTP server (outgoing)"),
                         [tags.code(s.outgoing_host), " ", _("port"), " ",
                          tags.code(str(s.submission_port)), ", ", ssl]))
    common = [(_("Username"), username), (_("Password"), _("the mailbox's password")),
              (_("Authentication"), _("Normal password"))]
    return [
        tags.p(_("Every mailbox has its own username and password. You find the username "
                 "in Manage services, next to the address. You can read your mail in any "
                 "mail program or in the browser, and send mail through our server from "
                 "anywhere."), class_="lead"),
        tags.section(class_="card")(
            tags.h2(_("The settings")),
            _settings_table(_, incoming + outgoing + common),
            tags.p(_("Use IMAP if you read mail on more than one device: every device "
                     "then sees the same folders. POP3 fetches the inbox to one device."),
                   class_="hint")),
        tags.section(class_="card")(
            tags.h2("Thunderbird"),
            tags.ol(
                tags.li(_("Choose Account Settings, then Account Actions, then Add Mail "
                          "Account.")),
                tags.li(_("Enter your name, your e-mail address and the mailbox's "
                          "password, and press Continue.")),
                tags.li(_("Thunderbird finds the settings by itself and fills in your "
                          "username. Check that it shows IMAP, then press Done.")),
                tags.li(_("If it asks for a username, enter the mailbox's username, not "
                          "the address.")))),
        tags.section(class_="card")(
            tags.h2(_("Windows Mail and Outlook")),
            tags.ol(
                tags.li(_("Add an account and choose Advanced setup, then Internet "
                          "e-mail (IMAP).")),
                tags.li(_("Enter the servers and ports from the table above, with "
                          "SSL/TLS switched on for both incoming and outgoing mail.")),
                tags.li(_("Use the mailbox's username and password for both servers.")))),
        tags.section(class_="card")(
            tags.h2(_("iPhone and iPad")),
            tags.p(_("Log in to Manage services on the device and choose Set up on "
                     "iPhone/iPad next to the mailbox. Install the profile in Settings; it "
                     "asks for the password. Or add the account by hand: Settings, Mail, "
                     "Accounts, Add Account, Other, with the settings above."))),
        tags.section(class_="card")(
            tags.h2(_("Android")),
            tags.p(_("In Gmail or your phone's mail app choose Add account, Other, "
                     "Personal (IMAP), and enter the settings above. Choose SSL/TLS for "
                     "security, not STARTTLS."))),
        tags.section(class_="card")(
            tags.h2(_("Webmail")),
            tags.p(pages.fmt(_("You can also read your mail in the browser: {link}."),
                             link=tags.a(_("Webmail"), href="/webmail/")))),
    ]
