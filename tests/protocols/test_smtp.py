"""The inbound MX (port 25), as transcripts over an in-memory transport:
extensions, recipient rules, relay tricks, DATA/BDAT framing and its
attacks, STARTTLS injection, pipelining with asynchronous lookups, limits
and timeouts."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from ktmail import errors
from ktmail.mime import HeaderLimits
from ktmail.model import Address
from ktmail.protocols import smtp
from tests.protocols.fakes import (
    ALICE,
    BOB,
    POSTMASTER,
    FakeDeliveryService,
    inbound_factory,
)
from tests.protocols.transcript import SMTPTranscript


class FakeBounces:
    def __init__(self, reported):
        self.reported = reported

    def report(self, envelope, failures, message_start):
        self.reported.append((envelope, failures, message_start))
        return defer.succeed("DSN1")


MESSAGE = ("From: friend@example.org\r\nTo: alice@brev.fi\r\nSubject: hello\r\n\r\n"
           "Hello Alice.\r\n")


class MXTestCase(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.delivery = FakeDeliveryService([ALICE, BOB, POSTMASTER])
        self.factory = inbound_factory(self.delivery, self.clock)

    def session(self, **kwargs):
        return SMTPTranscript(self, self.factory, **kwargs)

    def greeted(self, **kwargs):
        smtp_ = self.session(**kwargs)
        smtp_.send("EHLO client.example.org").expect("250 ")
        return smtp_


class GreetingAndExtensions(MXTestCase):
    def test_greeting_names_the_host(self):
        """The 220 greeting starts with the configured host name (RFC 5321 §4.2)."""
        s = self.session(greet=False)
        s.expect("220 mx.example.test ESMTP")

    def test_ehlo_advertises_the_extensions(self):
        """EHLO on 25 advertises SIZE with the limit, 8BITMIME, PIPELINING,
        ENHANCEDSTATUSCODES, CHUNKING, SMTPUTF8 and STARTTLS, and no AUTH."""
        ext = self.session().ehlo()
        self.assertEqual(ext["SIZE"], "SIZE 52428800")
        for keyword in ("8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES", "CHUNKING",
                        "SMTPUTF8", "STARTTLS"):
            self.assertIn(keyword, ext)
        self.assertNotIn("AUTH", ext)

    def test_no_starttls_without_certificate(self):
        """Without a TLS context STARTTLS is neither advertised nor accepted."""
        self.factory = inbound_factory(self.delivery, self.clock, tls_context=None)
        s = self.session()
        self.assertNotIn("STARTTLS", s.ehlo())
        s.send("STARTTLS").expect("502 5.5.1")

    def test_auth_does_not_exist_on_port_25(self):
        """AUTH is unknown on the MX, before and after TLS."""
        s = self.greeted()
        s.send("AUTH PLAIN AGFsaWNlX3UAcGFzc3dvcmQ=").expect("500 5.5.1")
        s.send("STARTTLS").expect("220 2.0.0")
        self.assertNotIn("AUTH", s.ehlo())
        s.send("AUTH PLAIN AGFsaWNlX3UAcGFzc3dvcmQ=").expect("500 5.5.1")

    def test_helo_works_without_extensions(self):
        """HELO answers one 250 line and mail still flows; Received: says SMTP."""
        s = self.session()
        s.send("HELO old.example.org").expect("250 mx.example.test Hello old.example.org")
        s.message("x@example.org", ["alice@brev.fi"], MESSAGE).expect("250 2.0.0")
        self.assertIn(b"with SMTP id", self.delivery.delivered[0].message)

    def test_ehlo_needs_a_name(self):
        """EHLO without a name is a syntax error and the session goes on."""
        s = self.session()
        s.send("EHLO").expect("501 5.5.4")
        s.send("NOOP").expect("250 2.0.0")

    def test_every_reply_has_an_enhanced_code(self):
        """With ENHANCEDSTATUSCODES every 2xx/4xx/5xx reply after EHLO carries
        x.y.z (RFC 2034 §3)."""
        s = self.greeted()
        for command in ("NOOP", "RSET", "VRFY bob", "HELP", "FOO", "RCPT TO:<a@b.c>",
                        "MAIL FROM:<a@example.org>", "MAIL FROM:<b@example.org>",
                        "RCPT TO:<alice@brev.fi>", "RCPT TO:<nobody@brev.fi>",
                        "RCPT TO:<x@example.net>", "DATA"):
            s.send(command)
        for reply in s.replies():
            if reply[-1].startswith("354"):
                continue
            self.assertRegex(reply[-1], r"^[245]\d\d [245]\.\d{1,3}\.\d{1,3} ")

    def test_quit(self):
        """QUIT answers 221 2.0.0 and closes."""
        s = self.greeted()
        s.send("QUIT").expect("221 2.0.0")
        self.assertTrue(s.closed)

    def test_vrfy_neither_confirms_nor_denies(self):
        """VRFY gives 252 for any name, so addresses cannot be harvested."""
        s = self.greeted()
        s.send("VRFY alice").expect("252 2.5.0")
        s.send("VRFY nobody").expect("252 2.5.0")


class RecipientRules(MXTestCase):
    def test_mail_needs_ehlo(self):
        """MAIL before EHLO/HELO is out of sequence."""
        s = self.session()
        s.send("MAIL FROM:<a@example.org>").expect("503 5.5.1")

    def test_unknown_local_user(self):
        """A hosted domain without that mailbox: 550 5.1.1 at RCPT."""
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org>").expect("250 2.1.0")
        s.send("RCPT TO:<nobody@brev.fi>").expect("550 5.1.1")

    def test_foreign_domain_is_relay_denied(self):
        """Any other domain: 554 5.7.1 at RCPT."""
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org>").expect("250 2.1.0")
        s.send("RCPT TO:<victim@example.net>").expect("554 5.7.1")

    def test_full_mailbox(self):
        """A mailbox over its quota: 552 5.2.2 at RCPT."""
        self.delivery.full.add(ALICE.address)
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org>").expect("250 2.1.0")
        s.send("RCPT TO:<alice@brev.fi>").expect("552 5.2.2")

    def test_relay_tricks_never_relay(self):
        """Source routes, %-hacks, quoted local parts, bang paths, trailing
        dots, upper case and address literals never reach a foreign domain:
        each is refused as unknown, relay, or bad syntax, and the delivery
        service is asked only about hosted addresses or refuses the rest."""
        table = [
            ("<@brev.fi:victim@example.net>", "554 5.7.1"),
            ("<@brev.fi,@sboksi.fi:victim@example.net>", "554 5.7.1"),
            ("<victim%example.net@brev.fi>", "550 5.1.1"),
            ('<"victim@example.net"@brev.fi>', "550 5.1.1"),
            ('<"victim%example.net"@brev.fi>', "550 5.1.1"),
            ("<example.net!victim@brev.fi>", "550 5.1.1"),
            ("<victim@example.net@brev.fi>", "501 5.1.3"),
            ("<victim@example.net.>", "554 5.7.1"),
            ("<VICTIM@EXAMPLE.NET>", "554 5.7.1"),
            ("<victim@[192.0.2.1]>", "554 5.7.1"),
            ("<victim@[IPv6:2001:db8::1]>", "554 5.7.1"),
            ("<victim@brev.fi.example.net>", "554 5.7.1"),
            ("<victim@example.net>brev.fi", "501 5.5.4"),
            ("<victim@example.net,alice@brev.fi>", "501 5.1.3"),
            ("<alice@brev.fi> <victim@example.net>", "501 5.5.4"),
            ("<victim@example.net\\@brev.fi>", "501 5.1.3"),
            ("<victim@-example.net>", "501 5.1.3"),
            ("<victim@brev..fi>", "501 5.1.3"),
        ]
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org>").expect("250 2.1.0")
        for path, answer in table:
            with self.subTest(path=path):
                s.send(f"RCPT TO:{path}").expect(answer)
        self.assertIn(Address("victim%example.net", "brev.fi"), self.delivery.checked)
        self.assertIn(Address('"victim@example.net"', "brev.fi"), self.delivery.checked)
        s.send("DATA").expect("554 5.5.1")   # nothing was accepted

    def test_hosted_addresses_in_other_spellings(self):
        """Upper case, a trailing dot, an unneeded quote and a source route
        all reach the hosted mailbox (RFC 5321 §2.4, §4.1.2, §3.6.1)."""
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org>").expect("250 2.1.0")
        for path in ("<ALICE@BREV.FI>", "<alice@brev.fi.>", '<"alice"@brev.fi>',
                     "<@relay.example:alice@brev.fi>", "alice@brev.fi",
                     "<BoB@PikaPosti.fi>"):
            with self.subTest(path=path):
                s.send(f"RCPT TO:{path}").expect("250 2.1.5")
        s.send("DATA").expect("354")
        s.send_raw(MESSAGE + ".\r\n").expect("250 2.0.0")
        self.assertEqual(self.delivery.delivered[0].envelope.recipients,
                         (ALICE.address, BOB.address))

    def test_postmaster_without_domain(self):
        """RCPT TO:<postmaster> reaches the postmaster of the first hosted
        domain (RFC 5321 §4.5.1)."""
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org>").expect("250")
        s.send("RCPT TO:<Postmaster>").expect("250 2.1.5")
        self.assertEqual(self.delivery.checked, [POSTMASTER.address])

    def test_recipient_cap(self):
        """100 recipients are accepted; the 101st gets 452 4.5.3 so that the
        client sends the rest in another transaction (RFC 5321 §4.5.3.1.8)."""
        self.delivery.mailboxes = {Address(f"u{i}", "brev.fi"): ALICE for i in range(101)}
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org>").expect("250")
        for i in range(100):
            s.send(f"RCPT TO:<u{i}@brev.fi>").expect("250 2.1.5")
        s.send("RCPT TO:<u100@brev.fi>").expect("452 4.5.3")

    def test_rcpt_needs_mail(self):
        """RCPT before MAIL is out of sequence."""
        s = self.greeted()
        s.send("RCPT TO:<alice@brev.fi>").expect("503 5.5.1")

    def test_rcpt_parameters_are_refused(self):
        """DSN parameters are not offered, so RCPT parameters get 555."""
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org>").expect("250")
        s.send("RCPT TO:<alice@brev.fi> NOTIFY=NEVER").expect("555 5.5.4")

    def test_nested_mail(self):
        """A second MAIL in a transaction is refused until RSET."""
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org>").expect("250")
        s.send("MAIL FROM:<b@example.org>").expect("503 5.5.1")
        s.send("RSET").expect("250 2.0.0")
        s.send("MAIL FROM:<b@example.org>").expect("250 2.1.0")

    def test_sender_syntax(self):
        """A malformed reverse-path gets 501 5.1.7; <> is the null sender."""
        s = self.greeted()
        s.send("MAIL FROM:<a@@example.org>").expect("501 5.1.7")
        s.send("MAIL FROM:<>").expect("250 2.1.0")


class MailParameters(MXTestCase):
    def test_size_over_the_limit_at_mail(self):
        """MAIL with SIZE= over the limit: 552 5.3.4 before any data."""
        s = self.greeted()
        s.send("MAIL FROM:<big@example.org> SIZE=60000000").expect("552 5.3.4")
        s.send("MAIL FROM:<big@example.org> SIZE=52428800").expect("250 2.1.0")

    def test_body_8bitmime_and_binarymime(self):
        """BODY=8BITMIME is accepted; BINARYMIME is not offered (555)."""
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org> BODY=BINARYMIME").expect("555 5.5.4")
        s.send("MAIL FROM:<a@example.org> BODY=8BITMIME").expect("250 2.1.0")

    def test_unknown_parameter(self):
        """An unknown MAIL parameter gets 555 5.5.4 (RFC 5321 §4.1.1.11)."""
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org> RET=HDRS").expect("555 5.5.4")

    def test_smtputf8(self):
        """A UTF-8 sender needs the SMTPUTF8 parameter (553 5.6.7 without);
        with it the message is accepted and Received: says UTF8SMTP."""
        s = self.greeted()
        s.send("MAIL FROM:<jösé@exämple.org>").expect("553 5.6.7")
        s.send("MAIL FROM:<jösé@exämple.org> SMTPUTF8 BODY=8BITMIME").expect("250 2.1.0")
        s.send("RCPT TO:<alice@brev.fi>").expect("250")
        s.send("DATA").expect("354")
        s.send_raw("From: jösé@exämple.org\r\nSubject: ünïcödé\r\n\r\nhej\r\n.\r\n")
        s.expect("250 2.0.0")
        delivered = self.delivery.delivered[0]
        self.assertEqual(delivered.envelope.sender, "jösé@xn--exmple-cua.org")
        self.assertIn(b"with UTF8SMTP id", delivered.message)
        self.assertIn("Subject: ünïcödé".encode(), delivered.message)


class Data(MXTestCase):
    def test_message_is_stored_with_received_first(self):
        """DATA: the spool holds our Received: line, then the message exactly
        as sent (CRLF); the envelope names sender, recipient, client, HELO."""
        s = self.greeted()
        s.message("friend@example.org", ["alice@brev.fi"], MESSAGE).expect("250 2.0.0")
        [delivered] = self.delivery.delivered
        self.assertTrue(delivered.message.startswith(b"Received: from client.example.org "
                                                     b"([203.0.113.7])\r\n"))
        self.assertTrue(delivered.message.endswith(MESSAGE.encode()))
        envelope = delivered.envelope
        self.assertEqual(envelope.sender, "friend@example.org")
        self.assertEqual(envelope.recipients, (ALICE.address,))
        self.assertEqual(envelope.client_address, "203.0.113.7")
        self.assertEqual(envelope.client_helo, "client.example.org")
        self.assertEqual(envelope.protocol, "ESMTP")
        self.assertIsNone(envelope.tls)
        self.assertTrue(delivered.scan_spam)
        self.assertTrue(self.delivery.spools[0].discarded)

    def test_senders_spam_fields_are_left_out(self):
        """X-Spam-* fields the sender wrote never reach the mailbox (the
        delivery puts the verdict's own on top); the body is untouched."""
        s = self.greeted()
        forged = ("From: friend@example.org\r\nX-Spam-Status: No, score=-5.0\r\n"
                  "\ttests=ALL_TRUSTED\r\nX-Spam-Flag: NO\r\nSubject: hi\r\n\r\n"
                  "X-Spam-Flag: in the body\r\n")
        s.message("friend@example.org", ["alice@brev.fi"], forged).expect("250 2.0.0")
        stored = self.delivery.delivered[0].message
        self.assertTrue(stored.endswith(b"\r\nFrom: friend@example.org\r\nSubject: hi\r\n"
                                        b"\r\nX-Spam-Flag: in the body\r\n"), stored)

    def test_received_header(self):
        """Received: follows RFC 5321 §4.4: from HELO ([ip]), by host, with
        ESMTP, id, for <rcpt> with one recipient, and the date."""
        self.clock.advance(1795737600)   # 2026-11-27 00:00:00 UTC
        s = self.greeted()
        s.message("friend@example.org", ["alice@brev.fi"], MESSAGE).expect("250 2.0.0")
        message = self.delivery.delivered[0].message.decode()
        self.assertRegex(
            message,
            r"^Received: from client\.example\.org \(\[203\.0\.113\.7\]\)\r\n"
            r"\tby mx\.example\.test \(ktmail\) with ESMTP id [0-9A-F]{12}\r\n"
            r"\tfor <alice@brev\.fi>; Fri, 27 Nov 2026 00:00:00 \+0000\r\nFrom: friend")

    def test_received_without_for_when_several_recipients(self):
        """With several recipients Received: names none of them (Bcc privacy)."""
        s = self.greeted()
        s.message("f@example.org", ["alice@brev.fi", "bob@pikaposti.fi"], MESSAGE)
        s.expect("250 2.0.0")
        head = self.delivery.delivered[0].message.split(b"\r\n\r\n")[0]
        self.assertNotIn(b"for <", head)

    def test_received_names_tls_and_reverse_dns(self):
        """After STARTTLS, Received: says ESMTPS with the TLS version and
        cipher, and the forward-confirmed reverse DNS name when known."""
        self.factory.reverse_dns = lambda ip: defer.succeed("mail.example.org")
        s = self.greeted()
        s.send("STARTTLS").expect("220 2.0.0")
        s.send("EHLO client.example.org").expect("250 ")
        s.message("f@example.org", ["alice@brev.fi"], MESSAGE).expect("250 2.0.0")
        [delivered] = self.delivery.delivered
        self.assertIn(b"from client.example.org (mail.example.org [203.0.113.7])\r\n"
                      b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
                      b"\tby mx.example.test (ktmail) with ESMTPS id", delivered.message)
        self.assertEqual(delivered.envelope.tls, "TLSv1.3 TLS_AES_256_GCM_SHA384")
        self.assertEqual(delivered.envelope.protocol, "ESMTPS")

    def test_ipv6_client_in_received(self):
        """An IPv6 client appears as an IPv6 address literal."""
        s = SMTPTranscript(self, self.factory, peer="2001:db8::7")
        s.send("EHLO v6.example.org").expect("250 ")
        s.message("f@example.org", ["alice@brev.fi"], MESSAGE).expect("250 2.0.0")
        self.assertIn(b"([IPv6:2001:db8::7])", self.delivery.delivered[0].message)

    def test_dot_unstuffing(self):
        """Lines the client dot-stuffed are stored with one dot less
        (RFC 5321 §4.5.2)."""
        s = self.greeted()
        body = "Subject: dots\r\n\r\n..\r\n...leading\r\n.x\r\n"
        s.message("f@example.org", ["alice@brev.fi"], body).expect("250 2.0.0")
        self.assertTrue(self.delivery.delivered[0].message.endswith(
            b"Subject: dots\r\n\r\n.\r\n..leading\r\nx\r\n"))

    def test_empty_message(self):
        """A message with no bytes at all is stored as just Received:."""
        s = self.greeted()
        s.message("f@example.org", ["alice@brev.fi"], "").expect("250 2.0.0")
        self.assertTrue(self.delivery.delivered[0].message.startswith(b"Received:"))

    def test_250_only_after_durable_storage(self):
        """The 250 waits for the delivery service; commands pipelined after
        the end of data wait too, and are answered in order."""
        self.delivery.pending_deliveries = []
        s = self.greeted()
        s.message("f@example.org", ["alice@brev.fi"], MESSAGE)
        s.send("NOOP").expect_nothing()
        self.delivery.pending_deliveries[0].callback(None)
        s.expect("250 2.0.0").expect("250 2.0.0")

    def test_data_without_recipients(self):
        """DATA without any accepted recipient: 554 5.5.1 (RFC 2920 §3.1)."""
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org>").expect("250")
        s.send("RCPT TO:<nobody@brev.fi>").expect("550")
        s.send("DATA").expect("554 5.5.1")
        s.send("DATA").expect("554 5.5.1")

    def test_data_without_mail(self):
        """DATA before MAIL: 503 5.5.1."""
        self.greeted().send("DATA").expect("503 5.5.1")

    def test_transaction_ends_after_data(self):
        """After the message the next RCPT needs a new MAIL."""
        s = self.greeted()
        s.message("f@example.org", ["alice@brev.fi"], MESSAGE).expect("250")
        s.send("RCPT TO:<alice@brev.fi>").expect("503 5.5.1")
        s.send("MAIL FROM:<g@example.org>").expect("250")

    def test_rset_discards_the_transaction(self):
        """RSET forgets sender and recipients."""
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org>").expect("250")
        s.send("RCPT TO:<alice@brev.fi>").expect("250")
        s.send("RSET").expect("250 2.0.0")
        s.send("DATA").expect("503 5.5.1")

    def test_dropped_connection_discards_the_spool(self):
        """A client that disconnects in DATA leaves no spool behind."""
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org>").expect("250")
        s.send("RCPT TO:<alice@brev.fi>").expect("250")
        s.send("DATA").expect("354")
        s.send_raw(MESSAGE)
        s.protocol.connectionLost(None)
        self.assertTrue(self.delivery.spools[0].discarded)
        self.assertEqual(self.delivery.delivered, [])


class AfterDataFailures(MXTestCase):
    def deliver(self, recipients):
        s = self.greeted()
        s.message("f@example.org", recipients, MESSAGE)
        return s

    def test_all_stored(self):
        """Every recipient stored: 250."""
        self.deliver(["alice@brev.fi", "bob@pikaposti.fi"]).expect("250 2.0.0")

    def test_every_recipient_failed_permanently(self):
        """All recipients over quota after DATA: 552 5.2.2 for the message."""
        self.delivery.failures = {ALICE.address: errors.QuotaExceeded()}
        self.deliver(["alice@brev.fi"]).expect("552 5.2.2")

    def test_temporary_failure_of_one_recipient(self):
        """One stored and one failed temporarily: 451 4.3.0, so the client
        retries (a duplicate copy is better than a lost one)."""
        self.delivery.failures = {BOB.address: errors.StoreUnavailable()}
        self.deliver(["alice@brev.fi", "bob@pikaposti.fi"]).expect("451 4.3.0")

    def test_permanent_failure_of_one_recipient(self):
        """One stored and one refused permanently: 250 for the message, so the
        stored recipient does not get it again; the failure is logged and
        reported to the sender (a DSN, services.bounces)."""
        self.delivery.failures = {BOB.address: errors.QuotaExceeded()}
        reported = []
        self.factory.bounces = FakeBounces(reported)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.deliver(["alice@brev.fi", "bob@pikaposti.fi"]).expect("250 2.0.0")
        self.assertTrue(any("failed after DATA" in e.get("log_format", "") and
                            e.get("rcpt") == "bob@pikaposti.fi" for e in events))
        [(envelope, failures, start)] = reported
        self.assertEqual(envelope.sender, "f@example.org")
        self.assertEqual(list(failures), [BOB.address])
        self.assertTrue(failures[BOB.address].startswith("552 5.2.2 "))
        self.assertTrue(start.startswith(b"From: friend@example.org"))

    def test_unexpected_error_is_451_and_logged(self):
        """A bug in delivery: 451 4.3.0 with a generic text; the detail goes
        to the log only."""
        def broken(envelope, spool, scan_spam=True):
            raise RuntimeError("secret detail /var/lib/x")
        self.delivery.deliver = broken
        s = self.deliver(["alice@brev.fi"]).expect("451 4.3.0")
        self.assertNotIn("secret", s.last)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_spool_cannot_be_opened(self):
        """If no spool can be made (disk full), DATA gets 451 4.3.0 and BDAT
        the same after its chunk was read; the session goes on."""
        def full():
            raise errors.StoreUnavailable()
        self.delivery.new_spool = full
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org>").expect("250")
        s.send("RCPT TO:<alice@brev.fi>").expect("250")
        s.send("DATA").expect("451 4.3.0")
        s.send_raw(b"BDAT 4\r\nQUIT").expect("451 4.3.0")
        s.send("NOOP").expect("250 2.0.0")

    def test_spool_finish_failure(self):
        """If the spool cannot be flushed to disk: 451 4.3.0."""
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org>").expect("250")
        s.send("RCPT TO:<alice@brev.fi>").expect("250")
        s.send("DATA").expect("354")
        self.delivery.spools[0].finish_result = defer.fail(OSError("disk full"))
        s.send_raw(MESSAGE + ".\r\n").expect("451 4.3.0")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertTrue(self.delivery.spools[0].discarded)


class Framing(MXTestCase):
    def in_data(self):
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org>").expect("250")
        s.send("RCPT TO:<alice@brev.fi>").expect("250")
        s.send("DATA").expect("354")
        return s

    def test_lf_dot_lf_does_not_end_data(self):
        """`\\n.\\n` is not the end of data, and what follows it is not run
        as commands: the message (with its bare LFs) is refused whole at the
        real end, and no second message is delivered (SMTP smuggling)."""
        s = self.in_data()
        s.send_raw("Subject: a\r\n\r\nbody\n.\nMAIL FROM:<evil@example.org>\n"
                   "RCPT TO:<bob@pikaposti.fi>\nDATA\nSubject: smuggled\n\n.\n")
        s.expect_nothing()
        s.send_raw("\r\n.\r\n").expect("550 5.6.0")
        self.assertEqual(self.delivery.delivered, [])
        s.send("NOOP").expect("250 2.0.0")

    def test_variants_of_the_smuggling_terminator(self):
        """`\\r\\n.\\n`, `\\n.\\r\\n`, `\\r.\\r` inside DATA end nothing; each
        message is refused at the real end as holding a bare CR or LF."""
        for attack in ("x\r\n.\nRSET\r\n", "x\n.\r\nRSET\r\n", "x\r.\rRSET\r\n",
                       "x\r\n.\r\rRSET\r\n"):
            with self.subTest(attack=attack):
                s = self.in_data()
                s.send_raw(attack).expect_nothing()
                s.send_raw(".\r\n").expect("550 5.6.0")
        self.assertEqual(self.delivery.delivered, [])

    def test_bare_cr_is_refused(self):
        """A bare CR inside a line refuses the message."""
        s = self.in_data()
        s.send_raw("Subject: x\r\n\r\nover\rwrite\r\n.\r\n").expect("550 5.6.0")
        self.assertEqual(self.delivery.delivered, [])

    def test_end_of_data_split_across_segments(self):
        """The message and its terminator arrive one byte per segment: the
        stored bytes are the same as when sent at once."""
        body = b"Subject: split\r\n\r\n.leading\r\n..two\r\nend\r\n"
        stuffed = body.replace(b"\r\n.", b"\r\n..")
        s = self.in_data()
        for i in range(len(stuffed)):
            s.send_raw(stuffed[i:i + 1])
        s.expect_nothing()
        for byte in b".\r\n":
            s.send_raw(bytes([byte]))
        s.expect("250 2.0.0")
        self.assertTrue(self.delivery.delivered[0].message.endswith(body))

    def test_pipelined_commands_after_the_end(self):
        """Commands in the same segment after `.` are run after the message."""
        s = self.in_data()
        s.send_raw(MESSAGE + ".\r\nMAIL FROM:<b@example.org>\r\nRCPT TO:<bob@pikaposti.fi>\r\n")
        s.expect("250 2.0.0").expect("250 2.1.0").expect("250 2.1.5")

    def test_oversize_data_is_dropped_not_buffered(self):
        """A message over the limit without SIZE=: its bytes are read and
        dropped (the spool is discarded at once, nothing is kept in memory)
        and the end of data gets 552 5.3.4; the session goes on."""
        self.factory.max_message_bytes = 10000
        s = self.in_data()
        line = b"x" * 998 + b"\r\n"
        for _ in range(50):
            s.send_raw(line)
            self.assertLess(len(s.protocol._buffer), 3)
        spool = self.delivery.spools[0]
        self.assertTrue(spool.discarded)
        self.assertLessEqual(len(spool.data), 10000 + 1000)
        s.send_raw(".\r\n").expect("552 5.3.4")
        self.assertEqual(self.delivery.delivered, [])
        s.send("NOOP").expect("250 2.0.0")

    def test_exactly_the_limit_is_accepted(self):
        """A message of exactly max_message_bytes is accepted."""
        self.factory.max_message_bytes = 2000
        s = self.in_data()
        s.send_raw(b"x" * 998 + b"\r\n" + b"y" * 998 + b"\r\n" + b".\r\n").expect("250 2.0.0")

    def test_long_text_line(self):
        """Text lines longer than RFC 5321's 1000 are accepted up to 64 KiB;
        a longer one refuses the message with 550 5.6.0, and the session
        goes on."""
        s = self.in_data()
        s.send_raw(b"Subject: long\r\n\r\n" + b"a" * 5000 + b"\r\n.\r\n").expect("250 2.0.0")
        s = self.in_data()
        s.send_raw(b"Subject: long\r\n\r\n" + b"a" * 40000)
        s.send_raw(b"a" * 40000 + b"\r\n.\r\n").expect("550 5.6.0")
        s.send("NOOP").expect("250 2.0.0")

    def test_long_line_in_the_middle_of_a_segment(self):
        """A too-long line between two short ones in one segment is found."""
        s = self.in_data()
        s.send_raw(b"a\r\n" + b"b" * (smtp.MAX_TEXT_LINE + 1) + b"\r\nc\r\n.\r\n")
        s.expect("550 5.6.0")

    def test_long_command_line(self):
        """A command line over the limit is answered with 500 5.5.2, not by
        dropping the connection, and is not buffered."""
        s = self.greeted()
        s.send("NOOP " + "x" * 3000).expect("500 5.5.2")
        for _ in range(20):
            s.send_raw(b"y" * 10000)
        self.assertLessEqual(len(s.protocol._buffer), smtp.MAX_AUTH_LINE + 10000)
        s.send_raw(b"\r\nNOOP\r\n").expect("500 5.5.2").expect("250 2.0.0")

    def test_commands_may_end_with_lf(self):
        """Command lines ending in a bare LF are accepted (DATA is strict)."""
        s = self.session()
        s.send_raw(b"EHLO lf.example.org\nNOOP\n").expect("250 ").expect("250 2.0.0")


class Pipelining(MXTestCase):
    def test_pipelined_rcpts_wait_for_async_lookups(self):
        """MAIL, two RCPTs and DATA in one segment with recipient lookups that
        answer later: replies come in order and DATA's 354 only after both
        RCPT answers; the body is never run as commands (TWISTED-NOTES §3.4)."""
        self.delivery.pending_checks = []
        s = self.greeted()
        s.send_raw("MAIL FROM:<a@example.org>\r\nRCPT TO:<alice@brev.fi>\r\n"
                   "RCPT TO:<nobody@brev.fi>\r\nRCPT TO:<bob@pikaposti.fi>\r\nDATA\r\n")
        s.expect("250 2.1.0").expect_nothing()
        self.delivery.pending_checks[0][1].callback(None)
        s.expect("250 2.1.5").expect_nothing()
        self.delivery.pending_checks[1][1].callback(None)
        s.expect("550 5.1.1").expect_nothing()
        self.delivery.pending_checks[2][1].callback(None)
        s.expect("250 2.1.5").expect("354")
        s.send_raw(MESSAGE + ".\r\n").expect("250 2.0.0")
        self.assertEqual(self.delivery.delivered[0].envelope.recipients,
                         (ALICE.address, BOB.address))

    def test_pipelined_input_is_flow_controlled(self):
        """While a command waits, queued input past 256 KiB pauses reading,
        and reading resumes once the queue is worked off."""
        self.delivery.pending_checks = []
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org>").expect("250")
        s.send("RCPT TO:<alice@brev.fi>")
        s.send_raw(b"NOOP\r\n" * 50000)
        self.assertEqual(s.transport.producerState, "paused")
        self.delivery.pending_checks[0][1].callback(None)
        self.assertEqual(s.transport.producerState, "producing")
        self.assertEqual(len(s.replies()), 1 + 50000)

    def test_rejected_mail_then_pipelined_rcpt_and_data(self):
        """After a refused MAIL, pipelined RCPTs get 503 and DATA 503, so the
        body that a careless client sends next runs as (bad) commands only
        until the bad-command limit closes the session."""
        s = self.greeted()
        s.send_raw("MAIL FROM:<a@@x> \r\nRCPT TO:<alice@brev.fi>\r\nDATA\r\n")
        s.expect("501 5.1.7").expect("503 5.5.1").expect("503 5.5.1")


class StartTLS(MXTestCase):
    def test_commands_pipelined_after_starttls_are_discarded(self):
        """CVE-2011-0411: plain-text commands in the same segment as STARTTLS
        are dropped, not run inside TLS; the session must greet again."""
        s = self.greeted()
        s.send_raw("STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n"
                   "RCPT TO:<alice@brev.fi>\r\n")
        s.expect("220 2.0.0")
        s.expect_nothing()
        self.assertIs(s.transport.tls_started_with, self.factory.tls_context)
        s.send("RCPT TO:<alice@brev.fi>").expect("503 5.5.1")
        s.send("MAIL FROM:<a@example.org>").expect("503 5.5.1")   # EHLO first
        self.assertEqual(self.delivery.checked, [])

    def test_state_is_reset_by_starttls(self):
        """HELO and a transaction begun before STARTTLS are forgotten."""
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org>").expect("250")
        s.send("RCPT TO:<alice@brev.fi>").expect("250")
        s.send("STARTTLS").expect("220 2.0.0")
        s.send("EHLO again.example.org").expect("250 ")
        s.send("DATA").expect("503 5.5.1")
        self.assertEqual(self.delivery.spools, [])

    def test_starttls_only_once(self):
        """After TLS, STARTTLS is not advertised and is refused."""
        s = self.greeted()
        s.send("STARTTLS").expect("220")
        self.assertNotIn("STARTTLS", s.ehlo())
        s.send("STARTTLS").expect("503 5.5.1")

    def test_starttls_takes_no_argument(self):
        """STARTTLS with an argument is a syntax error (RFC 3207 §4)."""
        self.greeted().send("STARTTLS now").expect("501 5.5.4")


class BDATChunking(MXTestCase):
    def start(self):
        s = self.greeted()
        s.send("MAIL FROM:<a@example.org>").expect("250")
        s.send("RCPT TO:<alice@brev.fi>").expect("250")
        return s

    def test_chunks(self):
        """BDAT chunks are acknowledged; BDAT LAST stores the message as sent
        (no dot handling)."""
        s = self.start()
        first = b"Subject: chunks\r\n\r\n.not stuffed\r\n"
        s.send_raw(b"BDAT %d\r\n" % len(first) + first).expect("250 2.0.0")
        s.send_raw(b"BDAT 8 LAST\r\n.\r\nend\r\n").expect("250 2.0.0")
        self.assertTrue(self.delivery.delivered[0].message.endswith(
            b"Subject: chunks\r\n\r\n.not stuffed\r\n.\r\nend\r\n"))

    def test_pipelined_chunks_split_anywhere(self):
        """Chunks may arrive in any segmentation, commands pipelined."""
        s = self.start()
        data = b"BDAT 5\r\nSubj:BDAT 9 LAST\r\n x\r\n\r\nb\r\nNOOP\r\n"
        for i in range(len(data)):
            s.send_raw(data[i:i + 1])
        s.expect("250 2.0.0").expect("250 2.0.0").expect("250 2.0.0")
        self.assertTrue(self.delivery.delivered[0].message.endswith(b"Subj: x\r\n\r\nb\r\n"))

    def test_crlf_split_between_chunks(self):
        """A CRLF split between two chunks is a line end, not a bare CR."""
        s = self.start()
        s.send_raw(b"BDAT 3\r\nA\r\n").expect("250")
        s.send_raw(b"BDAT 3 LAST\r\n\nB\n").expect("550 5.6.0")
        s = self.start()
        s.send_raw(b"BDAT 3\r\nA:\r").expect("250")
        s.send_raw(b"BDAT 3 LAST\r\n\r\n\n").expect("550 5.6.0")
        s = self.start()
        s.send_raw(b"BDAT 3\r\nA:\r").expect("250")
        s.send_raw(b"BDAT 3 LAST\r\n\r\n\r").expect("550 5.6.0")
        s = self.start()
        s.send_raw(b"BDAT 3\r\nA:\r").expect("250")
        s.send_raw(b"BDAT 1 LAST\r\n\n").expect("250 2.0.0")

    def test_too_big_chunk_is_read_and_refused(self):
        """A chunk that passes the limit is read whole and answered 552
        5.3.4; later chunks of that transaction get 503 after being read."""
        self.factory.max_message_bytes = 100
        s = self.start()
        s.send_raw(b"BDAT 150\r\n" + b"x" * 148 + b"\r\n").expect("552 5.3.4")
        s.send_raw(b"BDAT 4\r\nNOOP").expect("503 5.5.1")
        s.send_raw(b"BDAT 4 LAST\r\nNOOP").expect("552 5.3.4")
        s.send("MAIL FROM:<a@example.org>").expect("250")
        self.assertEqual(self.delivery.delivered, [])

    def test_bdat_without_transaction_is_read_and_refused(self):
        """BDAT outside a transaction: its bytes are consumed, never run as
        commands, and it gets 503."""
        s = self.greeted()
        s.send_raw(b"BDAT 6\r\nQUIT\r\n").expect("503 5.5.1")
        self.assertFalse(s.closed)

    def test_bdat_syntax_error_closes(self):
        """BDAT without a size cannot be skipped: 501 and the session ends."""
        s = self.greeted()
        s.send("BDAT lots").expect("501 5.5.4")
        self.assertTrue(s.closed)

    def test_data_after_bdat(self):
        """DATA cannot follow BDAT in one transaction."""
        s = self.start()
        s.send_raw(b"BDAT 3\r\nA\r\n").expect("250")
        s.send("DATA").expect("503 5.5.1")


class Limits(MXTestCase):
    def test_idle_timeout(self):
        """A client silent for 5 minutes is told 421 4.4.2 and disconnected."""
        s = self.greeted()
        self.clock.advance(299)
        self.assertFalse(s.closed)
        s.send("NOOP").expect("250")
        self.clock.advance(299)
        self.assertFalse(s.closed)
        self.clock.advance(2)
        s.expect("421 4.4.2")
        self.assertTrue(s.closed)

    def test_no_timeout_while_the_server_works(self):
        """The idle timer stops while the message is being stored (the
        client waits for us); it starts again with the reply."""
        self.delivery.pending_deliveries = []
        s = self.greeted()
        s.message("f@example.org", ["alice@brev.fi"], MESSAGE)
        self.clock.advance(1000)
        self.assertFalse(s.closed)
        self.delivery.pending_deliveries[0].callback(None)
        s.expect("250 2.0.0")
        self.clock.advance(301)
        s.expect("421 4.4.2")

    def test_a_byte_a_minute_does_not_keep_the_session(self):
        """RFC 5321 §4.5.3.2.7: the 5 minutes are for a whole command; a
        client trickling a byte a minute (slowloris) is cut off at 5
        minutes all the same."""
        s = self.greeted()
        for byte in b"NOOP":
            s.send_raw(bytes([byte]))
            self.clock.advance(60)
        self.assertFalse(s.closed)
        self.clock.advance(61)
        s.expect("421 4.4.2")
        self.assertTrue(s.closed)

    def test_data_keeps_the_session_while_it_flows(self):
        """During DATA every block of bytes restarts the clock (RFC 5321
        §4.5.3.2.5): a slow but moving upload is not cut off."""
        s = self.greeted()
        s.send("MAIL FROM:<f@example.org>").expect("250")
        s.send("RCPT TO:<alice@brev.fi>").expect("250")
        s.send("DATA").expect("354")
        for _ in range(10):
            s.send_raw(b"Subject: slow\r\n")
            self.clock.advance(200)
        self.assertFalse(s.closed)
        s.send_raw(b"\r\nbody\r\n.\r\n").expect("250")

    def test_refusal_greeting(self):
        """What a client over the listener's connection cap is told, before
        the connection closes: 421 4.7.0 (RFC 5321 §3.8)."""
        self.assertEqual(self.factory.refusal(True),
                         b"421 4.7.0 mx.example.test Too many connections from your address; "
                         b"try again later.\r\n")
        self.assertTrue(self.factory.refusal(False).startswith(b"421 4.7.0 "))

    def test_header_section_limits(self):
        """A message whose header section is over max_header_bytes, or has
        more than max_header_fields fields, is refused with 552 5.3.4 and
        not stored; a big body under a small header is fine."""
        self.factory = inbound_factory(self.delivery, self.clock,
                                       header_limits=HeaderLimits(max_bytes=4096, max_fields=50))
        s = self.greeted()
        many = "".join(f"X-Field-{i}: {i}\r\n" for i in range(51)) + "\r\nbody\r\n"
        s.message("f@example.org", ["alice@brev.fi"], many).expect("552 5.3.4")
        self.assertIn("more than 50 header fields", s.last)
        big = "Subject: " + "x" * 5000 + "\r\n\r\nbody\r\n"
        s.message("f@example.org", ["alice@brev.fi"], big).expect("552 5.3.4")
        self.assertIn("larger than 4096 bytes", s.last)
        folded = "Subject: a\r\n" + " folded\r\n" * 500 + "\r\nbody\r\n"
        s.message("f@example.org", ["alice@brev.fi"], folded).expect("552 5.3.4")
        fine = "Subject: fine\r\n\r\n" + "a body line\r\n" * 10000
        s.message("f@example.org", ["alice@brev.fi"], fine).expect("250 2.0.0")
        self.assertEqual(len(self.delivery.delivered), 1)

    def test_bad_commands_disconnect(self):
        """Twenty unknown or malformed commands end the session with 421."""
        s = self.greeted()
        for _ in range(19):
            s.send("GARBAGE").expect("500 5.5.1")
        s.send("GARBAGE").expect("500 5.5.1").expect("421 4.7.0")
        self.assertTrue(s.closed)

    def test_nul_and_invalid_utf8_in_commands(self):
        """NUL bytes or invalid UTF-8 in a command get 500 5.5.2."""
        s = self.greeted()
        s.send_raw(b"NOOP\0\r\n").expect("500 5.5.2")
        s.send_raw(b"MAIL FROM:<\xff@x.org>\r\n").expect("500 5.5.2")


class TransactionLog(MXTestCase):
    def test_one_line_per_transaction(self):
        """Each transaction logs client, sender, recipient count, size and
        result on one line, and never the body."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        s = self.greeted()
        s.message("friend@example.org", ["alice@brev.fi"], MESSAGE).expect("250 2.0.0")
        lines = [e for e in events if e.get("log_format", "").startswith("SMTP {listener} client")]
        self.assertEqual(len(lines), 1)
        event = lines[0]
        self.assertEqual((event["client"], event["sender"], event["count"], event["size"],
                          event["code"]),
                         ("203.0.113.7", "friend@example.org", 1, len(MESSAGE), 250))
        self.assertNotIn("Hello Alice", repr(event))


class AddressParsing(unittest.TestCase):
    def test_paths(self):
        """parse_path: the RFC 5321 Path grammar, strictly."""
        good = {
            "a@b.c": ("a", "b.c", False),
            "A.B@EXAMPLE.ORG.": ("A.B", "example.org", False),
            '"a b"@x.org': ('"a b"', "x.org", False),
            '"a\\"b"@x.org': ('"a\\"b"', "x.org", False),
            '"ab"@x.org': ("ab", "x.org", False),
            "@r1.org,@r2.org:u@x.org": ("u", "x.org", False),
            "u@[192.0.2.1]": ("u", "[192.0.2.1]", True),
            "u@[IPv6:2001:DB8::1]": ("u", "[IPv6:2001:db8::1]", True),
        }
        for text, expected in good.items():
            with self.subTest(text=text):
                path = smtp.parse_path(text)
                self.assertEqual((path.local, path.domain, path.is_literal), expected)
        for text in ("a", "a@", "@x.org", "a@@x.org", "a..b@x.org", ".a@x.org", "a.@x.org",
                     "a@x..org", "a@-x.org", "a@x_y.org", "a b@x.org", '"a@x.org',
                     "a@[1.2.3]", "a@[IPv6:zz]", "a@x.org:", "x" * 65 + "@x.org",
                     "a@" + "x" * 64 + ".org", "@r1.org:", "a(comment)@x.org"):
            with self.subTest(text=text):
                self.assertRaises(smtp.AddressSyntaxError, smtp.parse_path, text)

    def test_utf8_paths(self):
        """UTF-8 local parts and IDN domains only with SMTPUTF8."""
        self.assertRaises(smtp.AddressSyntaxError, smtp.parse_path, "ü@x.org")
        path = smtp.parse_path("ü@bücher.example", utf8=True)
        self.assertEqual((path.local, path.domain), ("ü", "xn--bcher-kva.example"))

    def test_params(self):
        """Mail parameters: KEY[=VALUE], upper-cased keys, no duplicates."""
        self.assertEqual(smtp.parse_params("size=10 BODY=8BITMIME SMTPUTF8"),
                         {"SIZE": "10", "BODY": "8BITMIME", "SMTPUTF8": None})
        for text in ("SIZE=1 SIZE=2", "=x", "SIZE==1", "A=b=c"):
            with self.subTest(text=text):
                self.assertRaises(smtp.AddressSyntaxError, smtp.parse_params, text)


class ErrorMapping(unittest.TestCase):
    def test_every_error_has_its_reply(self):
        """to_smtp_reply: the SPEC §4 codes, in one table."""
        table = [
            (errors.NoSuchMailbox(), "rcpt", 550, "5.1.1"),
            (errors.RelayDenied(), "rcpt", 554, "5.7.1"),
            (errors.QuotaExceeded(), "rcpt", 552, "5.2.2"),
            (errors.TooBig(), "data", 552, "5.3.4"),
            (errors.AuthFailed(), "auth", 535, "5.7.8"),
            (errors.LoginThrottled(), "auth", 454, "4.7.0"),
            (errors.RateLimited(), "rcpt", 451, "4.7.1"),
            (errors.SenderRejected(), "mail", 553, "5.7.1"),
            (errors.SenderRejected(), "data", 550, "5.7.1"),
            (errors.OutboundUnavailable(), "rcpt", 451, "4.3.2"),
            (errors.StoreUnavailable(), "data", 451, "4.3.0"),
            (errors.LimitReached(), "data", 550, "5.0.0"),
        ]
        for error, stage, code, status in table:
            with self.subTest(error=type(error).__name__, stage=stage):
                reply = smtp.to_smtp_reply(error, stage)
                self.assertEqual((reply.code, reply.status), (code, status))
                self.assertEqual(reply.text, error.text)

    def test_unexpected_errors_are_generic(self):
        """Anything else: 451 4.3.0 with a generic text; the detail is logged."""
        reply = smtp.to_smtp_reply(KeyError("password=hunter2"), "rcpt")
        self.assertEqual((reply.code, reply.status), (451, "4.3.0"))
        self.assertNotIn("hunter2", reply.text)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)


class ReaderAndWriter(unittest.TestCase):
    def read_all(self, chunks):
        reader = smtp.DotStuffedReader()
        out = []
        for i, chunk in enumerate(chunks):
            pieces, rest = reader.feed(chunk)
            out.extend(pieces)
            if rest is not None:
                return b"".join(out), rest + b"".join(chunks[i + 1:])
        return b"".join(out), None

    def test_reader_table(self):
        """DotStuffedReader: unstuffing and the end, for whole inputs."""
        table = [
            (b".\r\n", b"", b""),
            (b"a\r\n.\r\nNOOP\r\n", b"a\r\n", b"NOOP\r\n"),
            (b"..\r\n.\r\n", b".\r\n", b""),
            (b"a\r\n..b\r\n.\r\n", b"a\r\n.b\r\n", b""),
            (b"a\n.\nb\r\n.\r\n", b"a\n.\nb\r\n", b""),
            (b"a\r\n.\nb\r\n.\r\n", b"a\r\n\nb\r\n", b""),
            (b"a.\r\n.\r\n", b"a.\r\n", b""),
        ]
        for data, content, rest in table:
            with self.subTest(data=data):
                self.assertEqual(self.read_all([data]), (content, rest))

    def test_reader_any_split(self):
        """Every way of cutting the input in two gives the same result."""
        data = b"x\r\n..y\r\n.z\r\n\r\n..\r\n.\r\nNEXT"
        whole = self.read_all([data])
        for i in range(len(data) + 1):
            with self.subTest(cut=i):
                self.assertEqual(self.read_all([data[:i], data[i:]]), whole)
        self.assertEqual(whole, (b"x\r\n.y\r\nz\r\n\r\n.\r\n", b"NEXT"))

    def test_writer_keeps_only_the_header_block(self):
        """MessageWriter holds bytes back only until the header block ends,
        then writes prefix + headers and streams the rest."""
        from tests.protocols.fakes import FakeSpool
        spool = FakeSpool()
        seen = []
        writer = smtp.MessageWriter(spool, 10**6,
                                    lambda h: seen.append(h) or b"Received: x\r\n")
        writer.write(b"Subject: a\r\n")
        self.assertEqual(bytes(spool.data), b"")
        writer.write(b"\r\nbody\r\n")
        self.assertEqual(bytes(spool.data), b"Received: x\r\nSubject: a\r\n\r\nbody\r\n")
        writer.write(b"more\r\n")
        self.assertIsNone(writer.close())
        self.assertEqual(seen, [b"Subject: a\r\n\r\nbody\r\n"])
        self.assertEqual(writer.size, len(b"Subject: a\r\n\r\nbody\r\nmore\r\n"))

    def test_writer_header_cap(self):
        """A header block that never ends is flushed at 64 KiB."""
        from tests.protocols.fakes import FakeSpool
        spool = FakeSpool()
        writer = smtp.MessageWriter(spool, 10**6, lambda h: b"")
        for _ in range(100):
            writer.write(b"X-Long: " + b"y" * 990 + b"\r\n")
        self.assertGreater(len(spool.data), 60000)
        self.assertEqual(len(writer.header_bytes), smtp.HEADER_CAPTURE)

    def test_received_header_is_safe(self):
        """A hostile HELO cannot break out of the Received: comment syntax."""
        header = smtp.received_header(
            helo="evil (x)\\", client_ip="192.0.2.1", client_name=None, hostname="h",
            with_type="ESMTP", tls=None, id="ID", recipient=None, when=0)
        self.assertTrue(header.startswith(b"Received: from evil__x__ ([192.0.2.1])\r\n"))
        self.assertEqual(re.findall(rb"\r\n(?![\t])", header), [b"\r\n"])


def reference_data(stream):
    """RFC 5321 §4.5.2 the slow way, line by line: -> (content, rest) or
    None when the stream has no <CRLF>.<CRLF> end."""
    content, pos = [], 0
    while True:
        end = stream.find(b"\r\n", pos)
        if end < 0:
            return None
        line = stream[pos:end]
        pos = end + 2
        if line == b".":
            return b"".join(content), stream[pos:]
        content.append((line[1:] if line.startswith(b".") else line) + b"\r\n")


class ReaderProperties(unittest.TestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from([b"a", b".", b"..", b"\r", b"\n", b"\r\n", b"x.y",
                                     b"\r\n.\r\n", b"\r\n.", b".\r"]), max_size=30),
           st.lists(st.integers(min_value=0, max_value=200), max_size=6))
    def test_reader_matches_the_line_by_line_reading(self, parts, cuts):
        """For any stream cut anywhere, DotStuffedReader finds the same end
        and yields the same bytes as reading line by line (which is how
        every other MTA reads DATA), so no message can end early here and
        late elsewhere."""
        stream = b"".join(parts) + b"\r\n.\r\nTAIL"
        expected = reference_data(stream)
        reader = smtp.DotStuffedReader()
        out, rest, pos = [], None, 0
        for cut in sorted({c for c in cuts if c < len(stream)}) + [len(stream)]:
            pieces, rest = reader.feed(stream[pos:cut])
            out.extend(pieces)
            if rest is not None:
                rest += stream[cut:]
                break
            pos = cut
        self.assertEqual((b"".join(out), rest), expected)
