"""MIME parsing figures: what delivery and index rebuilds pay per message,
and the bounded cost of hostile shapes (look-alike boundary lines, huge
header blocks, thousands of parts) next to a plain 50 MiB attachment.

Usage: python -m bench.mime_bench. Prints seconds per parse.
"""

import io
import time

from ktmail import mime

TYPICAL = (b"From: Anna <anna@example.com>\r\nTo: bo@sboksi.fi\r\n"
           b"Subject: =?utf-8?q?M=C3=B6te?=\r\nDate: Mon, 13 Nov 2023 10:00:00 +0200\r\n"
           b"Message-ID: <m1@example.com>\r\n"
           + b"Received: from a by b; Mon, 13 Nov 2023 10:00:00 +0200\r\n" * 8
           + b"Content-Type: multipart/alternative; boundary=a\r\n\r\n"
           b"--a\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHej!\r\n"
           b"--a\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hej!</p>\r\n--a--\r\n")


def cases():
    line = b"A" * 76 + b"\r\n"
    yield "typical multipart/alternative (x1000)", TYPICAL, 1000
    yield "50 MiB base64 attachment", (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nhi\r\n--b\r\n"
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + line * (50 * 1024 * 1024 // len(line)) + b"--b--\r\n"), 1
    yield "1M look-alike boundary lines", (
        b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\r\n"
        + b"--qx\r\n" * 1_000_000 + b"--q--\r\n"), 1
    yield "3M header lines", b"X: y\r\n" * 3_000_000 + b"\r\nbody", 1
    yield "10,000 parts", (b"Content-Type: multipart/mixed; boundary=p\r\n\r\n"
                           + b"--p\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 10_000
                           + b"--p--\r\n"), 1


def main():
    for label, data, repeat in cases():
        start = time.perf_counter()
        for _ in range(repeat):
            mime.summarize(io.BytesIO(data))
        elapsed = (time.perf_counter() - start) / repeat
        print(f"{label:<44} {elapsed:10.5f} s per message", flush=True)
    return 0


if __name__ == "__main__":
    main()
