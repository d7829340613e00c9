"""build_core wires the mail store, the mailboxes service and delivery the
way the daemon and ktmail-admin use them."""

import os

import attrs
from twisted.internet import reactor, task
from twisted.trial import unittest

from ktmail import tap
from ktmail.config import parse_config
from ktmail.model import Address
from ktmail.services import deferred
from ktmail.services.delivery import Envelope
from ktmail.services.mtasts import PolicyResolver
from ktmail.tap import _MailHousekeeping, build_core, build_outbound
from tests.fake_mx import StubResolver
from tests.services.test_mailboxes import Session

CONFIG = """\
[ktmail]
hostname = mail.example.test
[listen]
smtp =
submission =
imap =
pop3 =
web =
"""


class MailWiringTests(unittest.TestCase):
    def setUp(self):
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        path = os.path.join(root, "ktmail.ini")
        with open(path, "w") as f:
            f.write(CONFIG)
        self.config = parse_config(CONFIG, path)
        self.core = build_core(self.config, reactor)
        self.addCleanup(self.core.db.close)

    @deferred
    async def test_delivery_reaches_sessions_and_removal_closes_them(self):
        """A delivery through core.delivery lands in the mailbox's Maildir and
        reaches an open session; removing the mailbox closes the session's
        folder and deletes the Maildir."""
        core = self.core
        await core.accounts.add_customer("kund1", "a long password 1", "test")
        mailbox = await core.accounts.add_mailbox("kund1", "anna", "anna@sboksi.fi",
                                                  "a long password 2", "test")
        self.assertEqual((await core.delivery.check_recipient(mailbox.address)).id, mailbox.id)
        session = Session()
        folder = await core.mailboxes.open_folder(mailbox, "INBOX")
        folder.add_listener(session)
        spool = core.delivery.new_spool()
        self.assertTrue(spool.path.startswith(os.path.join(self.config.data_dir, "spool")))
        spool.write(b"From: Maija <maija@example.org>\r\nTo: anna@sboksi.fi\r\n"
                    b"Date: Fri, 27 Nov 2026 10:00:00 +0200\r\n"
                    b"Message-ID: <1@example.org>\r\nSubject: hello\r\n\r\nHi Anna, see you "
                    b"at the meeting tomorrow.\r\n")
        await spool.finish()
        result = await core.delivery.deliver(
            Envelope(sender="x@example.org", recipients=(Address.parse("anna@sboksi.fi"),)),
            spool)
        spool.discard()
        self.assertEqual(list(result.values()), [None])
        self.assertEqual(session.events, [("added", [1])])
        maildir_path = core.mail.mailbox_path(mailbox.id)
        self.assertEqual(len(os.listdir(os.path.join(maildir_path, "new"))), 1)
        await core.accounts.remove_mailbox("anna", "test")
        self.assertEqual(session.events[-1], ("closed", "INBOX"))
        self.assertFalse(os.path.exists(maildir_path))

    @deferred
    async def test_housekeeping_at_start(self):
        """The daemon's start-up service removes spool files of earlier runs."""
        stale = os.path.join(self.config.data_dir, "spool", "1.P4194999Q1Rab")
        with open(stale, "wb") as f:
            f.write(b"left by a crash")
        _MailHousekeeping(self.core).startService()
        for _ in range(100):
            if not os.path.exists(stale):
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(os.path.exists(stale))


    def test_outbound_uses_mta_sts_for_mx_delivery(self):
        """Delivery by MX lookup gets MTA-STS, its cache under
        <data_dir>/mta-sts and the MX router's resolver; a smarthost none."""
        self.patch(tap.dns_client, "createResolver", StubResolver)
        queue, _ = build_outbound(self.core, reactor)
        self.assertIsInstance(queue.mta_sts, PolicyResolver)
        self.assertIs(queue.mta_sts.resolver, queue.router.resolver)
        self.assertEqual(queue.mta_sts.cache.root,
                         os.path.join(self.config.data_dir, "mta-sts"))
        relayed = attrs.evolve(self.config, relay=attrs.evolve(
            self.config.relay, smarthost=("relay.example.test", 25)))
        queue, _ = build_outbound(attrs.evolve(self.core, config=relayed), reactor)
        self.assertIsNone(queue.mta_sts)
