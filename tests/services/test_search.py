"""Searching a folder (services/search.py): the meaning of each key over
the index and the message files, and the order in which data is loaded."""

import base64
import datetime
import io

from twisted.internet import task
from twisted.trial import unittest

from ktmail.config import Limits
from ktmail.model import Address, Mailbox
from ktmail.services import deferred
from ktmail.services import search as q
from ktmail.services.mailboxes import MailboxService
from ktmail.store.memory import MemoryMailStore

START = 1_700_000_000  # 14-Nov-2023 22:13:20 UTC

PLAIN = (b"From: =?utf-8?q?Bj=C3=B6rn?= <bjorn@example.se>\r\n"
         b"To: alice@sboksi.fi\r\nSubject: =?iso-8859-1?q?M=F6te_p=E5_fredag?=\r\n"
         b"Date: Mon, 13 Nov 2023 09:00:00 +0100\r\nX-Ticket: ABC-123\r\n"
         b"Message-ID: <m1@example.se>\r\n\r\n" + "Vi ses i Göteborg.\r\n".encode())
ENCODED = (b"From: shop@example.com\r\nSubject: Kvitto\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\nSumma: 100 kr =E5 betala\r\n"
           b"--b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64"
           b"\r\n\r\n" + base64.b64encode("<p>Tack för <b>köpet</b></p>".encode()) + b"\r\n"
           b"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + base64.b64encode(b"%PDF secret-inside-pdf") + b"\r\n--b--\r\n")


class CountingFolder:
    """A LiveFolder wrapper that counts the messages whose files are read."""

    def __init__(self, live):
        self.live = live
        self.read = []

    def details(self, uids, with_structure=True):
        return self.live.details(uids, with_structure)

    def read_messages(self, uids, reader):
        self.read.extend(uids)
        return self.live.read_messages(uids, reader)


class SearchTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(START)
        store = MemoryMailStore(self.clock)
        self.mailbox = Mailbox(id=1, customer_id=1, username="alice_u",
                               address=Address("alice", "sboksi.fi"), quota_bytes=10**9,
                               created=START)
        self.successResultOf(store.create_mailbox(1))
        self.service = MailboxService(store, None, Limits(), self.clock)

    async def folder_with(self, *messages, flags=()):
        for n, data in enumerate(messages):
            await self.service.append(self.mailbox, "INBOX", io.BytesIO(data),
                                      flags=flags[n] if n < len(flags) else ())
            self.clock.advance(86400)
        return await self.service.open_folder(self.mailbox, "INBOX")

    async def search(self, live, query, scope=None):
        messages = list(enumerate(live.infos(), 1))
        scope = scope or q.Scope(last_position=len(messages),
                                 last_uid=live.uids[-1] if live.uids else 0)
        folder = CountingFolder(live)
        found = await q.search(folder, query, messages, scope)
        return found, folder

    @deferred
    async def test_header_keys_use_decoded_cached_fields(self):
        """FROM/SUBJECT match decoded RFC 2047 text case-insensitively, from
        the index alone (no file is read)."""
        live = await self.folder_with(PLAIN, ENCODED)
        for query, expected in ((q.HeaderHas("from", "BJÖRN"), [1]),
                                (q.HeaderHas("subject", "möte på"), [1]),
                                (q.HeaderHas("to", "alice@"), [1]),
                                (q.HeaderHas("subject", "kvitto"), [2]),
                                (q.HeaderHas("cc", ""), []),
                                (q.HeaderHas("message-id", "m1@example"), [1])):
            found, folder = await self.search(live, query)
            self.assertEqual(found, expected, query)
            self.assertEqual(folder.read, [], query)

    @deferred
    async def test_other_header_fields_are_read_from_the_file(self):
        """HEADER with a field the index does not cache reads the header
        block; an empty string matches every message having the field."""
        live = await self.folder_with(PLAIN, ENCODED)
        found, folder = await self.search(live, q.HeaderHas("x-ticket", "abc-1"))
        self.assertEqual(found, [1])
        self.assertEqual(sorted(folder.read), [1, 2])
        found, _ = await self.search(live, q.HeaderHas("mime-version", ""))
        self.assertEqual(found, [2])

    @deferred
    async def test_body_is_decoded_part_by_part(self):
        """BODY finds text in quoted-printable, base64 and HTML parts in
        their charsets, not in attachments or headers; TEXT adds headers."""
        live = await self.folder_with(PLAIN, ENCODED)
        for query, expected in ((q.BodyHas("å betala"), [2]), (q.BodyHas("KÖPET"), [2]),
                                (q.BodyHas("göteborg"), [1]),
                                (q.BodyHas("secret-inside-pdf"), []),
                                (q.BodyHas("Kvitto"), []),
                                (q.BodyHas("kvitto", with_headers=True), [2]),
                                (q.BodyHas("<b>"), [])):
            found, _ = await self.search(live, query)
            self.assertEqual(found, expected, query)

    @deferred
    async def test_cheap_keys_decide_first(self):
        """UNSEEN BODY x reads only the unseen messages' files (three-valued
        evaluation); OR short-circuits."""
        live = await self.folder_with(PLAIN, ENCODED, PLAIN, flags=[("\\Seen",), (), ()])
        found, folder = await self.search(live, q.And((q.FlagIs("\\Seen", False),
                                                    q.BodyHas("göteborg"))))
        self.assertEqual((found, sorted(folder.read)), ([3], [2, 3]))
        found, folder = await self.search(live, q.Or(q.FlagIs("\\Seen"), q.BodyHas("nothing")))
        self.assertEqual((found, sorted(folder.read)), ([1], [2, 3]))

    @deferred
    async def test_dates_sizes_and_sets(self):
        """RFC 3501: BEFORE/ON/SINCE compare INTERNALDATE days, SENT* the
        Date: header's day; LARGER/SMALLER; positions and UIDs with ``*``."""
        live = await self.folder_with(PLAIN, ENCODED, PLAIN)
        day = datetime.date(2023, 11, 15)  # the second message arrived that day (UTC)
        cases = ((q.DateIs("internal", "on", day), [2]),
                 (q.DateIs("internal", "before", day), [1]),
                 (q.DateIs("internal", "since", day), [2, 3]),
                 (q.DateIs("sent", "on", datetime.date(2023, 11, 13)), [1, 3]),
                 (q.DateIs("sent", "before", datetime.date(2023, 11, 13)), []),
                 (q.SizeIs("larger", len(PLAIN)), [2]),
                 (q.SizeIs("smaller", len(PLAIN)), []),
                 (q.InSet(((2, None),), by_uid=False), [2, 3]),
                 (q.InSet(((None, None),), by_uid=True), [3]),
                 (q.Not(q.InSet(((1, 1),), by_uid=True)), [2, 3]))
        for query, expected in cases:
            found, _ = await self.search(live, query)
            self.assertEqual(found, expected, query)

    @deferred
    async def test_recent_new_old(self):
        """RECENT/NEW/OLD follow the session's own \\Recent set."""
        live = await self.folder_with(PLAIN, PLAIN, flags=[("\\Seen",)])
        scope = q.Scope(recent=frozenset({1, 2}), last_position=2, last_uid=2)
        self.assertEqual((await self.search(live, q.new(), scope))[0], [2])
        self.assertEqual((await self.search(live, q.old(), scope))[0], [])
        self.assertEqual((await self.search(live, q.Recent(), q.Scope()))[0], [])

    def test_evaluate_is_three_valued(self):
        """A key that needs dearer data answers None until it is loaded."""
        from ktmail.model import MessageInfo
        info = MessageInfo(uid=1, key="k", flags=frozenset(), size=10, internal_date=START,
                           saved_at=START, modseq=1)
        c = q.Candidate(1, info)
        body = q.BodyHas("x")
        self.assertIsNone(q.evaluate(body, c, q.Scope(), q.INFO))
        self.assertIs(q.evaluate(q.Or(body, q.All()), c, q.Scope(), q.INFO), True)
        self.assertIs(q.evaluate(q.And((body, q.FlagIs("\\Seen"))), c, q.Scope(), q.INFO),
                      False)
