"""Delivery: recipients checked at RCPT, one durable copy per recipient,
INBOX or Spam, the header lines in front, limits per recipient."""

import io
import os

from twisted.internet import defer, task
from twisted.trial import unittest

from ktmail import errors
from ktmail.config import DEFAULT_DOMAINS, Limits
from ktmail.model import NOT_SCANNED, Address
from ktmail.services import delivery as delivery_module
from ktmail.services.delivery import DeliveryService, Envelope
from ktmail.services.mailboxes import MailboxService
from ktmail.store import maildir
from ktmail.store.maildir import MaildirStore
from ktmail.store.memory import MemoryMailStore, MemoryStore
from ktmail.store.sqlite import InlineRunner
from tests.services.fakes import GTUBE, GtubeSpamFilter, inline
from tests.services.test_mailboxes import Session

START = 1_700_000_000
MESSAGE = (b"Received: from mx.example.org by mail.ktnet.fi; Mon, 13 Nov 2023 10:00:00 +0000\r\n"
           b"From: Maija <maija@example.org>\r\nTo: anna@sboksi.fi\r\nSubject: Hej\r\n\r\n"
           b"Hello Anna.\r\n")


class DeliveryTestCase(unittest.TestCase):
    limits = Limits(max_message_bytes=100_000)

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(START)
        self.accounts = MemoryStore()
        self.mail = self.make_store()
        self.spam = GtubeSpamFilter(inline)
        self.mailboxes = MailboxService(self.mail, self.spam, self.limits, self.clock)
        self.spool_dir = os.path.join(self.mktemp(), "spool")
        self.service = DeliveryService(self.accounts, self.mailboxes, self.spam, self.limits,
                                       DEFAULT_DOMAINS, self.clock, self.spool_dir, inline)
        customer = self.successResultOf(self.accounts.add_customer("kund", "x", START))
        self.anna = self.add_mailbox(customer, "anna", "anna@sboksi.fi")
        self.bo = self.add_mailbox(customer, "bo", "bo@brev.fi", quota=100)

    def make_store(self):
        return MemoryMailStore(self.clock, files_dir=self.mktemp())

    def add_mailbox(self, customer, username, address, quota=10_000_000):
        mailbox = self.successResultOf(self.accounts.add_mailbox(
            customer.id, username, Address.parse(address), "hash", quota, START, 5))
        self.successResultOf(self.mail.create_mailbox(mailbox.id))
        return mailbox

    def spool(self, data=MESSAGE):
        spool = self.service.new_spool()
        for i in range(0, len(data), 7):
            spool.write(data[i:i + 7])
        self.successResultOf(spool.finish())
        return spool

    def envelope(self, *recipients, sender="maija@example.org"):
        return Envelope(sender=sender, recipients=tuple(Address.parse(r) for r in recipients),
                        client_address="80.69.12.34", received_at=self.clock.seconds())

    def stored(self, mailbox, folder="INBOX"):
        snapshot = self.successResultOf(self.mail.open_folder(mailbox.id, folder))
        out = []
        for info in snapshot.messages:
            f = self.successResultOf(self.mail.open_message(mailbox.id, folder, info.uid))
            with f:
                out.append(f.read())
        return out


class DeliverTests(DeliveryTestCase):
    def test_delivery_to_inbox_with_header_lines(self):
        """A clean message lands in INBOX with Return-Path: and the spam
        verdict in front of the message as received."""
        result = self.successResultOf(self.service.deliver(
            self.envelope("anna@sboksi.fi"), self.spool()))
        self.assertEqual(result, {Address.parse("anna@sboksi.fi"): None})
        [data] = self.stored(self.anna)
        self.assertTrue(data.startswith(
            b"Return-Path: <maija@example.org>\r\nX-Spam-Status: No, score=0.0 required=5.0\r\n"
            b"\ttests=none\r\nX-Spam-Score: 0.0\r\nReceived: from mx.example.org"))
        self.assertTrue(data.endswith(MESSAGE))
        self.assertEqual(self.stored(self.anna, "Spam"), [])

    def test_gtube_goes_to_spam(self):
        """The GTUBE string always scores as spam: Spam folder, X-Spam-Status: Yes."""
        spool = self.spool(MESSAGE + b"junk " + GTUBE + b"\r\n")
        result = self.successResultOf(self.service.deliver(self.envelope("anna@sboksi.fi"),
                                                           spool))
        self.assertEqual(list(result.values()), [None])
        self.assertEqual(self.stored(self.anna), [])
        [data] = self.stored(self.anna, "Spam")
        self.assertIn(b"X-Spam-Status: Yes, score=1000.0 required=5.0\r\n\ttests=GTUBE\r\n", data)

    def test_unscanned_delivery_has_no_spam_headers(self):
        """Authenticated local mail (scan_spam=False) is not scored."""
        spool = self.spool(MESSAGE + GTUBE)
        self.successResultOf(self.service.deliver(self.envelope("anna@sboksi.fi"), spool,
                                                  scan_spam=False))
        [data] = self.stored(self.anna)
        self.assertFalse(b"X-Spam" in data.split(b"Received:")[0])

    def test_per_recipient_results(self):
        """Each recipient gets its own outcome: stored, no such mailbox,
        relay denied, over quota, while the others are stored."""
        spool = self.spool()
        result = self.successResultOf(self.service.deliver(self.envelope(
            "anna@sboksi.fi", "nobody@sboksi.fi", "someone@example.com", "bo@brev.fi",
            "anna@sboksi.fi"), spool))
        self.assertIsNone(result[Address.parse("anna@sboksi.fi")])
        self.assertIsInstance(result[Address.parse("nobody@sboksi.fi")], errors.NoSuchMailbox)
        self.assertIsInstance(result[Address.parse("someone@example.com")], errors.RelayDenied)
        self.assertIsInstance(result[Address.parse("bo@brev.fi")], errors.QuotaExceeded)
        self.assertEqual(len(result), 4)
        self.assertEqual(len(self.stored(self.anna)), 1)
        self.assertEqual(self.stored(self.bo), [])

    def test_too_big(self):
        """A message above max_message_bytes (plus the room kept for our own
        trace fields) is refused per recipient (TooBig)."""
        spool = self.spool(MESSAGE + b"x" * (self.limits.max_message_bytes
                                             + delivery_module.TRACE_ALLOWANCE))
        result = self.successResultOf(self.service.deliver(self.envelope("anna@sboksi.fi"),
                                                           spool))
        self.assertIsInstance(result[Address.parse("anna@sboksi.fi")], errors.TooBig)
        self.assertEqual(self.stored(self.anna), [])

    def test_limit_counts_the_message_as_sent_not_our_trace_fields(self):
        """A message of exactly max_message_bytes, to which SMTP put its
        Received: field, is delivered (the client was told SIZE=max)."""
        received = b"Received: from mx.example.org by mail.ktnet.fi; x\r\n" * 20
        body = MESSAGE + b"x" * (self.limits.max_message_bytes - len(MESSAGE))
        result = self.successResultOf(self.service.deliver(self.envelope("anna@sboksi.fi"),
                                                           self.spool(received + body)))
        self.assertEqual(list(result.values()), [None])

    def test_role_addresses_reach_the_postmaster_mailbox(self):
        """postmaster@ and abuse@ of every hosted domain reach the configured
        postmaster mailbox (RFC 5321 §4.5.1, RFC 2142); other unknown names
        stay unknown, and without a postmaster they are unknown too."""
        for address in ("postmaster@brev.fi", "Abuse@pikaposti.fi"):
            d = self.service.check_recipient(Address.parse(address))
            self.failureResultOf(d, errors.NoSuchMailbox)
        self.service.postmaster = Address.parse("anna@sboksi.fi")
        for address in ("postmaster@brev.fi", "abuse@pikaposti.fi"):
            got = self.successResultOf(self.service.check_recipient(Address.parse(address)))
            self.assertEqual(got.id, self.anna.id)
        self.failureResultOf(self.service.check_recipient(Address.parse("hostmaster@brev.fi")),
                             errors.NoSuchMailbox)
        result = self.successResultOf(self.service.deliver(
            self.envelope("postmaster@brev.fi"), self.spool()))
        self.assertEqual(list(result.values()), [None])
        self.assertEqual(len(self.stored(self.anna)), 1)

    def test_null_sender(self):
        """Bounces (null reverse-path) get Return-Path: <>."""
        self.successResultOf(self.service.deliver(self.envelope("anna@sboksi.fi", sender=""),
                                                  self.spool(), scan_spam=False))
        [data] = self.stored(self.anna)
        self.assertTrue(data.startswith(b"Return-Path: <>\r\n"))

    def test_open_sessions_see_the_delivery(self):
        """An IMAP session with INBOX open hears of the new message at once."""
        session = Session()
        folder = self.successResultOf(self.mailboxes.open_folder(self.anna, "INBOX"))
        folder.add_listener(session)
        self.successResultOf(self.service.deliver(self.envelope("anna@sboksi.fi"), self.spool()))
        self.assertEqual(session.events, [("added", [1])])

    def test_failed_scan_delivers_unscored(self):
        """If the spam filter fails, the message still reaches INBOX."""
        class BrokenFilter:
            def scan(self, path, envelope, mailbox):
                return defer.fail(RuntimeError("rules failed to load"))
        self.service.spam = BrokenFilter()
        result = self.successResultOf(self.service.deliver(self.envelope("anna@sboksi.fi"),
                                                           self.spool()))
        self.assertEqual(list(result.values()), [None])
        [data] = self.stored(self.anna)
        self.assertNotIn(b"X-Spam-Status", data)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unexpected_failures_are_temporary(self):
        """A bug or an I/O error in storing gives the recipient a temporary
        StoreUnavailable (SMTP 451), never the exception text."""
        def broken(*args, **kwargs):
            return defer.fail(OSError("No space left on device"))
        self.patch(self.mail, "add_message", broken)
        result = self.successResultOf(self.service.deliver(self.envelope("anna@sboksi.fi"),
                                                           self.spool()))
        error = result[Address.parse("anna@sboksi.fi")]
        self.assertIsInstance(error, errors.StoreUnavailable)
        self.assertTrue(error.temporary)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_dsn_and_notice_delivery(self):
        """deliver_local (DSNs from the outbound queue) and deliver_notice
        (inactivity warnings, even over quota) store into INBOX with the null
        Return-Path."""
        self.successResultOf(self.service.deliver_local(Address.parse("anna@sboksi.fi"),
                                                        io.BytesIO(b"Subject: DSN\r\n\r\nx")))
        self.failureResultOf(self.service.deliver_local(Address.parse("x@example.com"),
                                                        io.BytesIO(b"x")), errors.RelayDenied)
        self.successResultOf(self.service.deliver_notice(self.bo, b"Subject: warning\r\n\r\n"
                                                         + b"y" * 400))
        self.assertEqual(self.stored(self.anna), [b"Return-Path: <>\r\nSubject: DSN\r\n\r\nx"])
        self.assertEqual(len(self.stored(self.bo)), 1)


class RecipientTests(DeliveryTestCase):
    def test_check_recipient(self):
        """RCPT: hosted and existing -> the mailbox; foreign -> RelayDenied;
        unknown -> NoSuchMailbox; full -> QuotaExceeded."""
        mailbox = self.successResultOf(self.service.check_recipient(
            Address.parse("anna@sboksi.fi")))
        self.assertEqual(mailbox.id, self.anna.id)
        self.failureResultOf(self.service.check_recipient(Address.parse("a@example.com")),
                             errors.RelayDenied)
        failure = self.failureResultOf(self.service.check_recipient(
            Address.parse("ghost@sboksi.fi")), errors.NoSuchMailbox)
        self.assertIn("ghost@sboksi.fi", failure.value.text)
        self.successResultOf(self.service.deliver_notice(self.bo, b"x" * 100))
        self.failureResultOf(self.service.check_recipient(Address.parse("bo@brev.fi")),
                             errors.QuotaExceeded)


class SpoolTests(DeliveryTestCase):
    def test_spool_lifecycle(self):
        """A spool is a file in the spool directory: written, finished
        (complete), discarded (gone); discard is idempotent."""
        spool = self.service.new_spool()
        self.assertEqual(os.path.dirname(spool.path), self.spool_dir)
        spool.write(b"abc")
        spool.write(b"def")
        self.assertEqual(spool.size, 6)
        self.successResultOf(spool.finish())
        with open(spool.path, "rb") as f:
            self.assertEqual(f.read(), b"abcdef")
        self.assertRaises(ValueError, spool.write, b"more")
        spool.discard()
        spool.discard()
        self.assertFalse(os.path.exists(spool.path))
        unfinished = self.service.new_spool()
        unfinished.write(b"partial")
        unfinished.discard()
        self.assertEqual(os.listdir(self.spool_dir), [])

    def test_finish_fsyncs(self):
        """finish() makes the spool durable (fsync) before it fires."""
        synced = []
        real_fsync = os.fsync
        self.patch(delivery_module.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
        spool = self.service.new_spool()
        spool.write(b"x")
        self.successResultOf(spool.finish())
        self.assertEqual(len(synced), 1)

    def test_stale_spools_are_cleaned_at_start(self):
        """Spool files of a dead process, of unknown origin, or older than a
        day go; the running process's fresh ones stay."""
        mine = self.service.new_spool()
        dead = os.path.join(self.spool_dir, f"{START}.P{2 ** 22 + 3}Q1Rab")
        stray = os.path.join(self.spool_dir, "stray")
        old_mine = os.path.join(self.spool_dir, f"{START}.P{os.getpid()}Q99Rcd")
        for path in (dead, stray, old_mine):
            open(path, "wb").close()
        os.utime(old_mine, (START - 2 * 86400, START - 2 * 86400))
        self.assertEqual(self.successResultOf(self.service.clean_spool()), 3)
        self.assertEqual(os.listdir(self.spool_dir), [os.path.basename(mine.path)])


class DurableDeliveryTests(DeliveryTestCase):
    """Over the real Maildir store."""

    def make_store(self):
        self.data_dir = self.mktemp()
        return MaildirStore(self.data_dir, self.clock, InlineRunner())

    def test_durable_before_the_result(self):
        """When deliver() fires, the message file and its directory were
        fsynced and the index commit happened: a new store (a restart) sees
        it."""
        spool = self.spool()
        events = []
        in_dir_sync = []
        real_fsync, real_fsync_dir = os.fsync, maildir.fsync_dir

        def fsync(fd):
            if not in_dir_sync:
                events.append("fsync file")
            real_fsync(fd)

        def fsync_dir(path):
            events.append("fsync dir")
            in_dir_sync.append(path)
            try:
                real_fsync_dir(path)
            finally:
                in_dir_sync.pop()
        self.patch(maildir.os, "fsync", fsync)
        self.patch(maildir, "fsync_dir", fsync_dir)
        d = self.service.deliver(self.envelope("anna@sboksi.fi"), spool)
        d.addCallback(lambda result: events.append("answered"))
        self.successResultOf(d)
        self.assertEqual(events, ["fsync file", "fsync dir", "answered"])
        restarted = MaildirStore(self.data_dir, self.clock, InlineRunner())
        snapshot = self.successResultOf(restarted.open_folder(self.anna.id, "INBOX"))
        self.assertEqual(len(snapshot.messages), 1)

    def test_spam_verdict_header_over_maildir(self):
        """GTUBE over Maildir: the file is in .Spam/new with the headers."""
        self.successResultOf(self.service.deliver(self.envelope("anna@sboksi.fi"),
                                                  self.spool(MESSAGE + GTUBE)))
        spam_new = os.path.join(self.mail.mailbox_path(self.anna.id), ".Spam", "new")
        [name] = os.listdir(spam_new)
        with open(os.path.join(spam_new, name), "rb") as f:
            self.assertIn(b"X-Spam-Status: Yes", f.read())

    def test_not_scanned_verdict_constant(self):
        """model.NOT_SCANNED is what unscanned paths use elsewhere: not spam."""
        self.assertFalse(NOT_SCANNED.is_spam)
