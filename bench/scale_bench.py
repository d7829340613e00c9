"""One node vs two nodes on one machine: SMTP delivery and IMAP throughput.

    python -m bench.scale_bench [MESSAGES]

Starts a throwaway PostgreSQL (.ci/pg-cluster), then twice: one
``twistd ktmail`` node, and two nodes sharing the database and the data
directory (as behind a load balancer). Each run: 8 SMTP clients deliver
MESSAGES messages (3 KB, 10 per connection) to one mailbox, spread over
the nodes; then 8 IMAP clients each FETCH the whole INBOX, spread over the
nodes. Prints messages/s, MB/s and the two-node/one-node ratio. On a
2-core machine expect a ratio, not a speed-up: both nodes and PostgreSQL
share the same cores. Without the SMTP or IMAP listener in this tree, that
part is skipped (said so).
"""

import imaplib
import importlib.util
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLIENTS = 8
PER_CONNECTION = 10


def _present(module):
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _message(n):
    return (f"From: bench@example.org\r\nTo: bench@brev.fi\r\nSubject: bench {n}\r\n"
            f"Message-ID: <bench{n}@example.org>\r\n\r\n" + "0123456789abcdef" * 190
            + "\r\n").encode()


def _in_threads(count, work):
    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - start


def _smtp(nodes, total):
    per_client = total // CLIENTS

    def client(i):
        node = nodes[i % len(nodes)]
        sent = 0
        while sent < per_client:
            with smtplib.SMTP("127.0.0.1", node.ports["smtp"], timeout=60) as s:
                for _ in range(min(PER_CONNECTION, per_client - sent)):
                    s.sendmail("bench@example.org", ["bench@brev.fi"], _message(i * 10**6 + sent))
                    sent += 1
    seconds = _in_threads(CLIENTS, client)
    return per_client * CLIENTS / seconds


def _imap(nodes, password):
    fetched = [0] * CLIENTS

    def client(i):
        node = nodes[i % len(nodes)]
        m = imaplib.IMAP4_SSL("localhost", node.ports["imap"], ssl_context=node.client_tls())
        m.login("bench_u", password)
        m.select("INBOX", readonly=True)
        _typ, data = m.fetch("1:*", "(BODY.PEEK[])")
        fetched[i] = sum(len(part[1]) for part in data if isinstance(part, tuple))
        m.logout()
    seconds = _in_threads(CLIENTS, client)
    return sum(fetched) / seconds / 1e6


def run(node_count, url, total):
    import psycopg

    from tests.e2e import PASSWORD
    from tests.test_end_to_end_scale import Node
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    root = tempfile.mkdtemp(prefix="scale-bench-")
    nodes = []
    try:
        first = Node(os.path.join(root, "n0"), url)
        nodes.append(first)
        for i in range(1, node_count):
            nodes.append(Node(os.path.join(root, f"n{i}"), url, data_dir=first.data_dir))
        for node in nodes:
            node.start()
        first.add_mailboxes([("bench_u", "bench@brev.fi")])
        figures = {}
        if _present("ktmail.protocols.smtp"):
            figures["smtp"] = _smtp(nodes, total)
        if _present("ktmail.protocols.imap") and "smtp" in figures:
            figures["imap"] = _imap(nodes, PASSWORD)
        return figures
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(root, ignore_errors=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    total = int(argv[0]) if argv else 400
    sys.path.insert(0, ROOT)
    pgdir = tempfile.mkdtemp(prefix="scale-bench-pg-")
    os.rmdir(pgdir)
    try:
        out = subprocess.run([os.path.join(ROOT, ".ci", "pg-cluster"), "start", pgdir],
                             capture_output=True, text=True, check=False)
    except OSError as e:
        print(f"scale_bench: cannot start PostgreSQL ({e}); skipped")
        return 0
    if out.returncode != 0:
        print(f"scale_bench: cannot start PostgreSQL ({out.stderr.strip()}); skipped")
        return 0
    url = out.stdout.strip().split("=", 1)[1]
    try:
        results = {n: run(n, url, total) for n in (1, 2)}
    finally:
        subprocess.run([os.path.join(ROOT, ".ci", "pg-cluster"), "stop", pgdir], check=False)
    print(f"{total} messages of {len(_message(0))} bytes, {CLIENTS} clients, "
          f"{os.cpu_count()} cores")
    for kind, unit in (("smtp", "messages/s delivered"), ("imap", "MB/s fetched")):
        if kind not in results[1]:
            print(f"{kind}: skipped (no ktmail.protocols.{kind} in this tree)")
            continue
        one, two = results[1][kind], results[2][kind]
        print(f"{kind}: one node {one:.1f}, two nodes {two:.1f} {unit} "
              f"(ratio {two / one:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
