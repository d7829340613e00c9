"""HTML mail sanitising (nh3) and the streaming multipart reader."""

import io
import os

from twisted.trial import unittest

from ktmail.web import htmlmail, uploads
from tests.web.mail_support import multipart

ATTACKS = [
    ("<script>alert(1)</script>x", ["<script", "alert"]),
    ('<img src=x onerror="alert(1)">', ["onerror", "alert"]),
    ('<a href="javascript:alert(1)">x</a>', ["javascript"]),
    ('<a href=" JaVaScRiPt:alert(1)">x</a>', ["alert"]),
    ('<div style="position:fixed;top:0">x</div>', ["position"]),
    ('<p style="width:expression(alert(1))">x</p>', ["expression", "alert"]),
    ('<style>@import url(http://e.example/x.css)</style>x', ["@import", "e.example"]),
    ('<p style="background:url(http://e.example/t.gif)">x</p>', ["e.example"]),
    ('<p style="behavior:url(x.htc);-moz-binding:url(x)">x</p>', ["behavior", "binding"]),
    ('<svg onload="alert(1)"><script>alert(2)</script></svg>', ["svg", "alert"]),
    ('<iframe src="http://e.example"></iframe><object data="x"></object>', ["iframe", "object"]),
    ('<form action="http://e.example"><input name=p></form>', ["form", "input"]),
    ('<meta http-equiv="refresh" content="0;url=http://e.example">', ["meta", "e.example"]),
    ('<base href="http://e.example/">', ["base", "e.example"]),
    ('<link rel=stylesheet href="http://e.example/x.css">', ["link", "e.example"]),
    ('<img src="http://t.example/p.gif"><img src="//t.example/q.gif">', ["t.example"]),
    ('<table background="http://t.example/b.gif"><tr><td>x</td></tr></table>', ["t.example"]),
    ('<!--[if mso]><script>alert(1)</script><![endif]-->x', ["alert", "<!--"]),
    ("<math><mtext><script>alert(1)</script></mtext></math>", ["alert"]),
]


class SanitiseTests(unittest.TestCase):
    def test_nothing_runs_nothing_loads(self):
        for html, banned in ATTACKS:
            cleaned, _blocked = htmlmail.sanitize(html)
            for word in banned:
                self.assertNotIn(word.lower(), cleaned.lower(), html)

    def test_remote_images_counted_and_kept_only_when_asked(self):
        html = '<img src="http://t.example/a.gif"><img src="https://t.example/b.gif">'
        cleaned, blocked = htmlmail.sanitize(html)
        self.assertEqual(blocked, 2)
        self.assertNotIn("t.example", cleaned)
        cleaned, blocked = htmlmail.sanitize(html, allow_remote=True)
        self.assertIn("https://t.example/b.gif", cleaned)
        self.assertIn("t.example", htmlmail.frame_csp("https://m.example", True) + cleaned)
        self.assertNotIn("http:", htmlmail.frame_csp("https://m.example", False))

    def test_cid_images_and_layout_survive(self):
        html = ('<table width="600" bgcolor="#ffffff"><tr><td style="padding:8px;color:#333">'
                '<img src="cid:logo@x" alt="Logo"><font color="red">Hej</font>'
                '<a href="https://example.org/">länk</a></td></tr></table>')
        cleaned, _ = htmlmail.sanitize(html, lambda cid: "/inline/t/2" if cid == "logo@x"
                                       else None)
        for kept in ('src="/inline/t/2"', 'width="600"', "padding: 8px", 'color="red"',
                     'href="https://example.org/"', 'target="_blank"', "noopener"):
            self.assertIn(kept, cleaned)

    def test_frame_policy(self):
        csp = htmlmail.frame_csp("https://m.example", False)
        for part in ("default-src 'none'", "sandbox", "form-action 'none'",
                     "img-src data: https://m.example;"):
            self.assertIn(part, csp)
        self.assertNotIn("script", csp)


class MultipartReaderTests(unittest.TestCase):
    def read(self, fields, budget=10**6, token="good"):
        body, content_type = multipart(fields)
        directory = self.mktemp()
        store = uploads.UploadStore(directory)
        result = uploads.read_form_data(io.BytesIO(body), uploads.boundary_of(content_type),
                                        lambda value: value == token, store.new_path, budget)
        return result, directory

    def test_fields_and_files(self):
        data = os.urandom(200_000) + b"\r\n--not-the-boundary\r\n"
        (fields, files), directory = self.read([
            ("csrf", "good"), ("subject", "Hälsning"), ("files", ("bild åäö.bin", "image/png",
                                                                  data)),
            ("files", ("", "application/octet-stream", b"")), ("do", "send")])
        self.assertEqual(fields["subject"], ["Hälsning"])
        self.assertEqual(fields["do"], ["send"])
        (upload,) = [f for f in files if f.size]
        self.assertEqual((upload.filename, upload.content_type), ("bild åäö.bin", "image/png"))
        with open(upload.path, "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(os.stat(upload.path).st_mode & 0o777, 0o600)

    def test_token_must_come_first_and_be_right(self):
        for fields in ([("subject", "x"), ("csrf", "good")], [("csrf", "bad")],
                       [("files", ("a.txt", "text/plain", b"A")), ("csrf", "good")]):
            directory = self.mktemp()
            with self.assertRaises(uploads.TokenRejected):
                body, content_type = multipart(fields)
                store = uploads.UploadStore(directory)
                uploads.read_form_data(io.BytesIO(body), uploads.boundary_of(content_type),
                                       lambda value: value == "good", store.new_path, 10**6)
            self.assertEqual(os.listdir(directory), [])

    def test_over_the_budget_nothing_is_kept(self):
        directory = self.mktemp()
        body, content_type = multipart([("csrf", "good"),
                                        ("files", ("a.bin", "x/y", b"a" * 600)),
                                        ("files", ("b.bin", "x/y", b"b" * 600))])
        store = uploads.UploadStore(directory)
        with self.assertRaises(uploads.UploadTooLarge):
            uploads.read_form_data(io.BytesIO(body), uploads.boundary_of(content_type),
                                   lambda value: True, store.new_path, 1000)
        self.assertEqual(os.listdir(directory), [])

    def test_file_names_cannot_carry_paths_or_line_breaks(self):
        self.assertEqual(uploads.clean_filename("C:\\Users\\x\\räkning.pdf"), "räkning.pdf")
        self.assertEqual(uploads.clean_filename("../../etc/passwd"), "passwd")
        self.assertEqual(uploads.clean_filename("a\r\nb.txt"), "ab.txt")
        self.assertEqual(uploads.clean_filename(""), "attachment")

    def test_truncated_bodies_are_refused(self):
        body, content_type = multipart([("csrf", "good"), ("files", ("a", "x/y", b"a" * 99))])
        store = uploads.UploadStore(self.mktemp())
        with self.assertRaises(uploads.BadUpload):
            uploads.read_form_data(io.BytesIO(body[:-60]), uploads.boundary_of(content_type),
                                   lambda value: True, store.new_path, 10**6)
        self.assertEqual(os.listdir(store.directory), [])

    def test_sweep_removes_old_files_only(self):
        store = uploads.UploadStore(self.mktemp())
        old, new = store.new_path(), store.new_path()
        for path in (old, new):
            with open(path, "wb") as f:
                f.write(b"x")
        os.utime(old, (1000, 1000))
        self.assertEqual(store.sweep(now=1000 + uploads.STALE_SECONDS + 1), 1)
        self.assertEqual(os.listdir(store.directory), [os.path.basename(new)])
