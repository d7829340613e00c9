"""``make run``'s set-up: a development config, a demo account, and the
facts a developer needs to point Thunderbird and a browser at it.

Writes the config only if it does not exist, and creates the demo customer
and mailbox only if they do not exist, so that running it again changes
nothing.
"""

import os
import sys

from twisted.internet import defer, task

from ktmail import errors
from ktmail.config import load_config

DEMO_CUSTOMER = ("demo-admin", "demo-portal-pw")
DEMO_MAILBOX = ("demo", "demo@sboksi.fi", "demo-mail-pw")
DEMO_PEER = ("demo2", "demo2@brev.fi", "demo2-mail-pw")

PORTS = {"smtp": 2525, "submission": 4465, "imap": 9993, "pop3": 9995, "web": 8080}

DEV_CONFIG = """\
; Development configuration written by `make run`; edit freely, it is not
; tracked. Production defaults are in SPEC §3 / README.
[ktmail]
hostname = localhost
data_dir = var
tls_cert = certs/server.pem
tls_key = certs/server.key

[listen]
smtp = tcp:{smtp}:interface=127.0.0.1
submission = ssl:{submission}:interface=127.0.0.1
imap = ssl:{imap}:interface=127.0.0.1
pop3 = ssl:{pop3}:interface=127.0.0.1
web = tcp:{web}:interface=127.0.0.1

[relay]
; no mail leaves a development machine: remote mail waits in the queue
smarthost = 127.0.0.1:1
"""


async def provision(reactor, config):
    from ktmail.tap import build_core

    core = build_core(config, reactor)
    try:
        try:
            await core.accounts.add_customer(DEMO_CUSTOMER[0], DEMO_CUSTOMER[1], "make run")
        except errors.AlreadyExists:
            pass
        for username, address, password in (DEMO_MAILBOX, DEMO_PEER):
            try:
                await core.accounts.add_mailbox(DEMO_CUSTOMER[0], username, address, password,
                                                "make run")
            except errors.AlreadyExists:
                pass
    finally:
        core.db.close()


def banner(config):
    p = PORTS
    return f"""
ktmail development server
  config         {config.path}
  data           {config.data_dir}
  certificate    self-signed, CN=localhost (certs/server.pem): accept it once

  webmail        http://localhost:{p['web']}/webmail/   user {DEMO_MAILBOX[0]} / {DEMO_MAILBOX[2]}
  portal         http://localhost:{p['web']}/admin/     user {DEMO_CUSTOMER[0]} / {DEMO_CUSTOMER[1]}
  health         http://localhost:{p['web']}/healthz

  Thunderbird (manual setup), address {DEMO_MAILBOX[1]}, username {DEMO_MAILBOX[0]}:
    IMAP  localhost port {p['imap']}  SSL/TLS  normal password
    POP3  localhost port {p['pop3']}  SSL/TLS  normal password
    SMTP  localhost port {p['submission']}  SSL/TLS  normal password
  inbound MX     localhost port {p['smtp']} (e.g. swaks --server localhost:{p['smtp']}
                 --to {DEMO_MAILBOX[1]})
  second mailbox {DEMO_PEER[0]} / {DEMO_PEER[2]} <{DEMO_PEER[1]}>, to send to
"""


def main(argv):
    path = argv[1] if len(argv) > 1 else "ktmail-dev.ini"
    if not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(DEV_CONFIG.format(**PORTS))
    config = load_config(path)
    task.react(lambda reactor: defer.Deferred.fromCoroutine(provision(reactor, config)))


if __name__ == "__main__":
    try:
        main(sys.argv)
    except SystemExit as e:
        if e.code:
            raise
    config = load_config(sys.argv[1] if len(sys.argv) > 1 else "ktmail-dev.ini")
    print(banner(config))
