"""Webmail uploads: a streaming ``multipart/form-data`` reader (RFC 7578)
and the folder where attachments wait until their message is sent.

twisted.web spools an upload's body to a temporary file (web/site.py never
lets it parse one); ``read_form_data`` reads that file in chunks on a
worker thread and writes each file part straight to its own file here, so
a 50 MiB attachment is never in memory. Invariants:

- the first field must be the ``csrf`` token and pass ``check_token``
  before a single byte of a file is written (a forged form stores nothing);
- file parts together may hold at most ``file_budget`` bytes: beyond that
  the reading stops, the files of this request are removed and
  ``UploadTooLarge`` tells how much there was room for;
- text fields are capped (``TEXT_LIMIT`` each): a longer one is refused;
- attachment files live under ``UploadStore.directory`` only, named by
  random ids (never by the sender's file name), mode 0600, and are removed
  when their message is sent or discarded, or by ``sweep`` after a day.
"""

import os
import re
import secrets

import attrs

from ktmail import mime

CHUNK = 64 * 1024
TEXT_LIMIT = 1024 * 1024
MAX_PART_HEADERS = 16 * 1024
MAX_FIELDS = 1000
#: upload files older than this are removed by ``sweep`` (sessions end sooner)
STALE_SECONDS = 24 * 3600


class BadUpload(Exception):
    """The body is not multipart/form-data we can read."""


class TokenRejected(Exception):
    """The first field is not a valid ``csrf`` token."""


class UploadTooLarge(Exception):
    def __init__(self, budget):
        super().__init__(budget)
        self.budget = budget


@attrs.frozen
class UploadedFile:
    field: str
    filename: str
    content_type: str
    path: str
    size: int


def boundary_of(content_type):
    """The boundary of a multipart/form-data Content-Type value, or None."""
    if not content_type:
        return None
    media, params = mime.parse_parameterized(content_type)
    if media != "multipart/form-data":
        return None
    boundary = dict(params).get("boundary")
    if not boundary or len(boundary) > 200:
        return None
    return boundary.encode("ascii", "replace")


def clean_filename(name):
    """The last path component of an uploaded file name, without control
    characters (a header can never be broken by it)."""
    name = re.split(r"[/\\]", name or "")[-1]
    name = "".join(c for c in name if c >= " " and c != "\x7f" and not 0x80 <= ord(c) < 0xa0)
    return name.strip()[:255] or "attachment"


class _Reader:
    def __init__(self, fileobj):
        self.file = fileobj
        self.buf = b""
        self.eof = False

    def fill(self, need):
        while len(self.buf) < need and not self.eof:
            data = self.file.read(CHUNK)
            if not data:
                self.eof = True
            else:
                self.buf += data


def read_form_data(fileobj, boundary, check_token, new_path, file_budget):
    """Read a multipart/form-data body from ``fileobj``.

    -> ({field: [text values]}, [UploadedFile]). ``check_token(value)`` is
    asked about the first field (which must be named ``csrf``);
    ``new_path()`` gives a fresh path for each file. Raises TokenRejected,
    UploadTooLarge, BadUpload; files already written are removed then."""
    reader = _Reader(fileobj)
    opening = b"--" + boundary
    delimiter = b"\r\n--" + boundary
    fields, files = {}, []
    used = 0
    first = True
    try:
        # the preamble, up to the first boundary line
        while True:
            reader.fill(len(opening) + 2)
            index = reader.buf.find(opening)
            if index == 0 or (index > 0 and reader.buf[index - 2:index] == b"\r\n"):
                reader.buf = reader.buf[index + len(opening):]
                break
            if reader.eof:
                raise BadUpload("no boundary")
            reader.buf = reader.buf[-len(opening):]
            reader.fill(len(reader.buf) + CHUNK)
        count = 0
        while True:
            reader.fill(2)
            if reader.buf.startswith(b"--"):
                return fields, files       # the close delimiter
            end = reader.buf.find(b"\r\n")
            if end < 0:
                raise BadUpload("truncated")
            reader.buf = reader.buf[end + 2:]   # rest of the boundary line
            while True:
                end = reader.buf.find(b"\r\n\r\n")
                if end >= 0 or reader.eof or len(reader.buf) > MAX_PART_HEADERS:
                    break
                reader.fill(len(reader.buf) + CHUNK)
            if end < 0 or end > MAX_PART_HEADERS:
                raise BadUpload("part headers")
            headers = mime.Headers(mime.parse_header_block(reader.buf[:end + 2]))
            reader.buf = reader.buf[end + 4:]
            count += 1
            if count > MAX_FIELDS:
                raise BadUpload("too many fields")
            _, params = mime.parse_parameterized(headers.get("content-disposition") or "")
            name = mime.decode_param(params, "name") or ""
            filename = mime.decode_param(params, "filename")
            if first:
                first = False
                if filename is not None or name != "csrf":
                    raise TokenRejected()
            out = None
            value = bytearray()
            upload = None
            if filename is not None and filename != "":
                path = new_path()
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                out = open(fd, "wb")  # noqa: SIM115 (closed below)
                content_type = mime.parse_parameterized(
                    headers.get("content-type") or "application/octet-stream")[0]
                upload = [name, clean_filename(filename), content_type or
                          "application/octet-stream", path, 0]
                files.append(upload)
            try:
                while True:
                    reader.fill(len(delimiter) + CHUNK)
                    index = reader.buf.find(delimiter)
                    if index >= 0:
                        data, reader.buf = reader.buf[:index], reader.buf[index + len(delimiter):]
                    elif reader.eof:
                        raise BadUpload("truncated part")
                    else:
                        keep = len(delimiter) - 1
                        data, reader.buf = reader.buf[:-keep], reader.buf[-keep:]
                    if upload is not None:
                        used += len(data)
                        upload[4] += len(data)
                        if used > file_budget:
                            raise UploadTooLarge(file_budget)
                        out.write(data)
                    elif filename is None:
                        value += data
                        if len(value) > TEXT_LIMIT:
                            raise BadUpload("field too long")
                    if index >= 0:
                        break
            finally:
                if out is not None:
                    out.close()
            if filename is None:
                try:
                    text = value.decode("utf-8")
                except UnicodeDecodeError:
                    raise BadUpload("not UTF-8") from None
                if "\0" in text:
                    raise BadUpload("NUL")
                if count == 1 and not check_token(text):
                    raise TokenRejected()
                fields.setdefault(name, []).append(text)
    except BaseException:
        for upload in files:
            _remove(upload[3])
        raise
    finally:
        files[:] = [UploadedFile(*u) if isinstance(u, list) else u for u in files]


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@attrs.define
class UploadStore:
    """The folder of waiting attachments (``<data_dir>/webmail``)."""

    directory: str

    def __attrs_post_init__(self):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)

    def new_path(self):
        return os.path.join(self.directory, secrets.token_hex(16))

    def owns(self, path):
        return os.path.dirname(os.path.abspath(path)) == os.path.abspath(self.directory)

    def remove(self, path):
        if self.owns(path):
            _remove(path)

    def sweep(self, now):
        """Remove files older than STALE_SECONDS (their sessions are over).
        Runs on a worker thread. -> number removed."""
        removed = 0
        for entry in os.scandir(self.directory):
            try:
                if entry.stat().st_mtime < now - STALE_SECONDS:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
