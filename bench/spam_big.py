"""What a huge message costs the spam filter: a 50 MiB message (a short text
and one big base64 attachment) is read, parsed, tokenized and scored.

    python -m bench.spam_big [MiB]
"""

import base64
import os
import sys
import tempfile
import time

from ktmail.services.spam import RuleSet, analyse_file, score


def main(argv=None, out=sys.stdout):
    argv = sys.argv[1:] if argv is None else argv
    mib = int(argv[0]) if argv else 50
    line = base64.b64encode(os.urandom(57)) + b"\r\n"   # 78 bytes, like a MIME encoder
    with tempfile.NamedTemporaryFile(suffix=".eml") as f:
        f.write(b"From: a@example.org\r\nTo: b@example.org\r\nSubject: big\r\n"
                b"Date: Tue, 03 Mar 2026 10:00:00 +0000\r\nMessage-ID: <big@example.org>\r\n"
                b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"B\"\r\n\r\n"
                b"--B\r\nContent-Type: text/plain\r\n\r\nThe photos are attached.\r\n"
                b"--B\r\nContent-Type: application/zip; name=\"photos.zip\"\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n")
        f.write(line * (mib * 1024 * 1024 // len(line)))
        f.write(b"--B--\r\n")
        f.flush()
        size = os.path.getsize(f.name)
        wall, cpu = time.perf_counter(), time.process_time()
        analysis = analyse_file(f.name)
        verdict = score(analysis.message, RuleSet())
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    out.write(f"{size / 1048576:.1f} MiB message: {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms "
              f"CPU to read, parse, tokenize and score (verdict: score {verdict.score})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
