"""IMAP sessions: greeting, capabilities, login, framing of commands and
literals, IDLE, timeouts (transcripts against the in-memory services)."""

import base64

from twisted.internet import defer
from twisted.trial import unittest

from ktmail import errors
from tests.protocols.imap_harness import PASSWORD, USERNAME, IMAPHarness

AFTER_LOGIN = {"IMAP4rev1", "IDLE", "NAMESPACE", "UIDPLUS", "MOVE", "SPECIAL-USE", "QUOTA",
               "ID", "ENABLE", "UNSELECT", "CHILDREN", "LITERAL+", "APPENDLIMIT=52428800",
               "SASL-IR"}


def plain(authzid, authcid, password):
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


class GreetingAndLoginTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)

    def test_greeting_lists_pre_login_capabilities(self):
        """RFC 3501 §7.1.1: the greeting carries CAPABILITY; AUTH=PLAIN over
        TLS; no STARTTLS on implicit TLS (SPEC §2)."""
        c = self.imap.connect()
        self.assertTrue(c.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 "))
        self.assertIn(b"AUTH=PLAIN", c.greeting)
        self.assertIn(b"SASL-IR", c.greeting)
        self.assertNotIn(b"STARTTLS", c.greeting)

    def test_capabilities_after_login(self):
        """SPEC §4: after login the full list is advertised, in the LOGIN
        reply's CAPABILITY code and by CAPABILITY."""
        c = self.imap.connect()
        r = c.login()
        self.assertTrue(AFTER_LOGIN <= set(r.tagged.decode().split("]")[0].split()[2:]))
        r = c.command("a CAPABILITY").ok()
        caps = set(r.untagged[0].decode().split()[2:])
        self.assertTrue(AFTER_LOGIN <= caps, AFTER_LOGIN - caps)
        self.assertNotIn("AUTH=PLAIN", caps)

    def test_no_password_without_tls(self):
        """SPEC §2: no password without TLS: LOGINDISABLED, and LOGIN and
        AUTHENTICATE answer NO [PRIVACYREQUIRED] (RFC 3501 §6.2.3)."""
        c = self.imap.connect(tls=False)
        self.assertIn(b"LOGINDISABLED", c.greeting)
        c.command(f"a LOGIN {USERNAME} \"{PASSWORD}\"").no("PRIVACYREQUIRED")
        c.command("b AUTHENTICATE PLAIN " + plain("", USERNAME, PASSWORD)).no(
            "PRIVACYREQUIRED")

    def test_login_with_username_not_address(self):
        """SPEC §1: the username logs in; the address does not
        (RFC 5530 AUTHENTICATIONFAILED)."""
        c = self.imap.connect()
        c.command(f"a LOGIN alice@sboksi.fi \"{PASSWORD}\"").no("AUTHENTICATIONFAILED")
        c.command(f"b LOGIN {USERNAME} wrong-password").no("AUTHENTICATIONFAILED")
        c.command(f"c LOGIN {USERNAME} \"{PASSWORD}\"").ok("Logged in")
        c.command("d LOGIN x y").bad()  # not valid once logged in

    def test_login_with_literals(self):
        """RFC 3501 §4.3: user name and password may be literals."""
        c = self.imap.connect()
        pw = PASSWORD.encode()
        c.command(f"a LOGIN {{{len(USERNAME)}}}",
                  literals=[USERNAME.encode() + b" {%d}\r\n" % len(pw), pw + b"\r\n"]).ok()

    def test_throttled_login(self):
        """SPEC §4: after too many failures from one address every attempt is
        refused for a while, answered NO [UNAVAILABLE] (RFC 5530)."""
        self.successResultOf(self.imap.accounts.add_event(
            "login-fail-addr:203.0.113.9", self.imap.clock.seconds(), 10))
        c = self.imap.connect()
        r = c.command(f"a LOGIN {USERNAME} \"{PASSWORD}\"").no("UNAVAILABLE")
        self.assertIn(b"Too many failed logins", r.tagged)

    def test_many_failures_close_the_connection(self):
        """A connection that fails five logins is closed with BYE."""
        c = self.imap.connect()
        for n in range(4):
            c.command(f"a{n} LOGIN {USERNAME} nope").no("AUTHENTICATIONFAILED")
        self.assertFalse(c.closed)
        r = c.command(f"a9 LOGIN {USERNAME} nope")
        self.assertTrue(c.closed)
        self.assertIn(b"* BYE", c.transport.value())
        self.assertTrue(r.tagged.startswith(b"a9 NO"))

    def test_authenticate_plain_with_initial_response(self):
        """RFC 4959 SASL-IR and RFC 4616 PLAIN in one line."""
        c = self.imap.connect()
        c.command("a AUTHENTICATE PLAIN " + plain("", USERNAME, PASSWORD)).ok("CAPABILITY")
        c.command("b SELECT INBOX").ok()

    def test_authenticate_plain_with_continuation(self):
        """RFC 3501 §6.2.2: without an initial response the server sends "+ "
        and reads the response line; "*" cancels."""
        c = self.imap.connect()
        c.send_raw(b"a AUTHENTICATE PLAIN\r\n")
        self.assertEqual(c.read_line(), b"+ ")
        c.send_raw(b"*\r\n")
        c.finish(b"a").bad()
        c.send_raw(b"b AUTHENTICATE PLAIN\r\n")
        self.assertEqual(c.read_line(), b"+ ")
        c.send_raw(plain(USERNAME, USERNAME, PASSWORD).encode() + b"\r\n")
        c.finish(b"b").ok()

    def test_authenticate_refusals(self):
        """Other mechanisms, bad base64, and another identity than one's own."""
        c = self.imap.connect()
        c.command("a AUTHENTICATE CRAM-MD5").no("CANNOT")
        c.command("b AUTHENTICATE PLAIN !!!").bad()
        c.command("c AUTHENTICATE PLAIN " + plain("bob_u", USERNAME, PASSWORD)).no(
            "AUTHORIZATIONFAILED")
        c.command("d AUTHENTICATE PLAIN " + plain("", USERNAME, "bad")).no(
            "AUTHENTICATIONFAILED")

    def test_quota_alert_at_login(self):
        """An [ALERT] tells the user when the mailbox is over 90 % full
        (RFC 3501 §7.1 ALERT)."""
        imap = IMAPHarness(self, quota_bytes=1000)
        imap.deliver(b"Subject: x\r\n\r\n" + b"y" * 900)
        r = imap.connect().login()
        alert = r.matching(rb"^\* OK \[ALERT\]")
        self.assertEqual(len(alert), 1, r)
        self.assertIn(b"% full", alert[0])


class CommandFramingTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.c = self.imap.connect(login=True)

    def test_unknown_and_misplaced_commands(self):
        """RFC 3501 §7.1.5: BAD for unknown commands, commands of another
        state, missing tags or commands; the session goes on."""
        c = self.c
        c.command("a FROBNICATE").bad()
        c.command("b FETCH 1 FLAGS").bad()      # nothing selected
        c.send_raw(b"lonely\r\n")
        self.assertTrue(c.read_line().startswith(b"lonely BAD"))
        c.send_raw(b"\r\n")
        self.assertTrue(c.read_line().startswith(b"* BAD"))
        c.command("c NOOP").ok()

    def test_twisted_leftovers_are_not_commands(self):
        """Only this server's command tables are reachable: STARTTLS (not on
        implicit TLS, SPEC §2) and a bare UID are BAD, answered once."""
        c = self.c
        r = c.command("a STARTTLS").bad()
        self.assertEqual(r.untagged, [])
        c.command("b UID").bad()
        c.command("c NOOP").ok()

    def test_pipelined_commands_run_in_order(self):
        """RFC 3501 §5.5: commands sent together run one after the other, each
        seeing the state the previous one left (SELECT, then FETCH)."""
        self.imap.fill(2)
        c = self.c
        c.send_raw(b"a SELECT INBOX\r\nb FETCH 1:* (FLAGS)\r\nc LOGOUT\r\n")
        lines = c.read_lines()
        tags = [line.split()[0] for line in lines if not line.startswith(b"*")]
        self.assertEqual(tags, [b"a", b"b", b"c"])
        self.assertIn(b"* 2 FETCH (FLAGS (\\Recent))", lines)

    def test_long_line_is_refused_and_the_session_goes_on(self):
        """TWISTED-NOTES §1.1: a line above 64 KiB gets BAD (Twisted drops
        the connection) and is skipped; lines up to it work."""
        c = self.c
        self.imap.fill(1)
        c.select()
        long_set = ",".join(["1"] * 30000)  # 60 KB: allowed
        c.command(f"a FETCH {long_set} (UID)").ok()
        c.send_raw(b"b FETCH " + b"1," * 40000 + b"1 (UID)\r\n")
        self.assertEqual(c.read_line(), b"b BAD The command line is too long.")
        self.assertFalse(c.closed)
        c.command("c NOOP").ok()

    def test_long_line_in_pieces_is_skipped_without_buffering(self):
        """A line that arrives in many pieces with no end in sight is thrown
        away as it comes (RFC 3501 §4); the next line is read normally."""
        c = self.c
        c.send_raw(b"a NOOP " + b"x" * 70000)
        self.assertEqual(c.read_line(), b"a BAD The command line is too long.")
        for _ in range(10):
            c.send_raw(b"y" * 50000)
        self.assertLess(len(c.protocol._buffer), 70000)
        c.send_raw(b"yyy\r\nb NOOP\r\n")
        c.finish(b"b").ok()

    def test_literal_plus(self):
        """RFC 7888: {n+} literals need no continuation."""
        c = self.c
        c.send_raw(b"a CREATE {5+}\r\nExtra\r\n")
        c.finish(b"a").ok()
        r = c.command('b LIST "" Extra')
        r.has(b'* LIST (\\HasNoChildren) "/" Extra')

    def test_oversized_literal_before_login(self):
        """Before login a literal above 8 KiB is refused: {n} without a
        continuation, {n+} read and thrown away; the session goes on."""
        c = self.imap.connect()
        r = c.command("a LOGIN {100000}")
        r.bad()
        c.send_raw(b"b LOGIN {20000+}\r\n" + b"x" * 20000 + b" y\r\n")
        c.finish(b"b").bad()
        self.assertLess(len(c.protocol._buffer), 1000)
        c.login()

    def test_small_commands_only_take_small_literals(self):
        """A literal above 64 KiB outside APPEND is refused (no buffering)."""
        self.c.command("a CREATE {70000}").bad()
        self.c.command("b NOOP").ok()

    def test_id_enable_namespace(self):
        """RFC 2971 ID, RFC 5161 ENABLE (nothing to enable yet), RFC 2342
        NAMESPACE with "/" as separator."""
        c = self.c
        r = c.command('a ID ("name" "mutt" "version" "2.2")').ok()
        self.assertTrue(r.untagged[0].startswith(b'* ID ("name" "ktmail"'))
        c.command("b ID NIL").ok()
        c.command("c ENABLE UNKNOWN-THING").ok().has("* ENABLED")
        c.command("d NAMESPACE").ok().has('* NAMESPACE (("" "/")) NIL NIL')

    def test_logout(self):
        """RFC 3501 §6.1.3: BYE, then the tagged OK, then the connection closes."""
        r = self.c.command("a LOGOUT").ok()
        self.assertTrue(r.untagged[-1].startswith(b"* BYE"))
        self.assertTrue(self.c.closed)

    def test_idle_timeout(self):
        """RFC 3501 §5.4: an authenticated session idle for 30 minutes is
        logged out with BYE (the injected clock decides)."""
        self.imap.clock.advance(29 * 60)
        self.assertFalse(self.c.closed)
        self.imap.clock.advance(61)
        self.assertTrue(self.c.closed)
        self.assertIn(b"* BYE Autologout", self.c.transport.value())

    def test_unauthenticated_timeout_is_short(self):
        """A connection that does not log in within a minute is closed."""
        c = self.imap.connect()
        self.imap.clock.advance(61)
        self.assertTrue(c.closed)


class ErrorMappingTests(unittest.TestCase):
    def test_unexpected_errors_are_generic_on_the_wire(self):
        """ARCHITECTURE convention 2: an unexpected exception becomes NO
        [SERVERBUG] with no detail on the wire (the detail is logged); the
        session goes on."""
        imap = IMAPHarness(self)
        c = imap.connect(login=True)

        def broken(mailbox_id, name):
            raise RuntimeError("secret internal detail")
        self.patch(imap.mail, "folder_status", broken)
        r = c.command("a STATUS INBOX (MESSAGES)").no("SERVERBUG")
        self.assertNotIn(b"secret", r.tagged)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        c.command("b NOOP").ok()

    def test_store_unavailable_is_temporary(self):
        """A store that is temporarily unavailable answers NO [UNAVAILABLE]
        with its client-safe text (RFC 5530)."""
        imap = IMAPHarness(self)
        c = imap.connect(login=True)
        self.patch(imap.mail, "list_folders",
                   lambda mailbox_id: defer.fail(errors.StoreUnavailable()))
        r = c.command('a LIST "" *').no("UNAVAILABLE")
        self.assertIn(b"temporarily unavailable", r.tagged)


class IdleTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.c = self.imap.connect(login=True)
        self.imap.fill(1)
        self.c.select()

    def test_idle_reports_new_mail_at_once(self):
        """RFC 2177: while idling, a delivery is reported immediately."""
        c = self.c
        c.send_raw(b"a IDLE\r\n")
        self.assertEqual(c.read_line(), b"+ idling")
        self.imap.deliver(b"Subject: new\r\n\r\nhi\r\n")
        # both messages are \Recent for this session (RFC 3501 §2.3.2)
        self.assertEqual(c.read_lines(), [b"* 2 EXISTS", b"* 2 RECENT"])
        c.send_raw(b"DONE\r\n")
        c.finish(b"a").ok()

    def test_only_done_ends_idle(self):
        """RFC 2177: only DONE ends IDLE (Twisted ends it on any line,
        TWISTED-NOTES §1.2); other lines are answered BAD."""
        c = self.c
        c.send_raw(b"a IDLE\r\n")
        c.read_line()
        c.send_raw(b"b NOOP\r\n")
        self.assertEqual(c.read_lines(), [b"* BAD Expected DONE."])
        c.send_raw(b"done\r\n")
        c.finish(b"a").ok()
        c.command("c NOOP").ok()

    def test_idle_in_authenticated_state(self):
        """IDLE works without a selected folder too (RFC 2177)."""
        c = self.c
        c.command("a UNSELECT").ok()
        c.send_raw(b"b IDLE\r\nDONE\r\n")
        self.assertEqual(c.read_line(), b"+ idling")
        c.finish(b"b").ok()
