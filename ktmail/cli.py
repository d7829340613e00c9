"""``ktmail-admin``: the operators' tool (SPEC §3).

Passwords are read from the first line of standard input, never from the
command line. Exit status: 0 done, 1 refused (one line on stderr saying
why), 2 usage error. It works beside a running daemon: both go through the
same services and the same database, whose transactions keep the rules.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

from twisted.internet import defer, task

from ktmail import errors
from ktmail.config import ConfigError, load_config
from ktmail.services.clientsetup import ClientSettings, dns_records
from ktmail.services.retention import run_all
from ktmail.services.spam import ALL_RULES

ACTOR = "ktmail-admin"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


class Refused(Exception):
    """The command cannot be carried out; the text says why."""


def read_password(stdin):
    line = stdin.readline()
    if not line:
        raise Refused("no password on standard input (give it as the first line)")
    return line.rstrip("\r\n")


def _day(t):
    return time.strftime("%Y-%m-%d", time.gmtime(t)) if t else "never"


def _mb(n):
    return f"{n / 1_000_000:.1f} MB"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="ktmail-admin",
        description="Manage ktmail customers and mailboxes. Passwords are read from the "
                    "first line of standard input.")
    parser.add_argument("--config", "-c", default="ktmail.ini", help="the ktmail.ini file")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)

    customer = sub.add_parser("customer", help="customer (portal) accounts")
    csub = customer.add_subparsers(dest="action", required=True)
    csub.add_parser("add", help="add a customer (password on stdin)").add_argument("login")
    csub.add_parser("list", help="list customers")
    csub.add_parser("remove", help="remove a customer and its mailboxes").add_argument("login")
    csub.add_parser("password", help="set a customer's password (on stdin)"
                    ).add_argument("login")

    mailbox = sub.add_parser("mailbox", help="mailboxes")
    msub = mailbox.add_subparsers(dest="action", required=True)
    add = msub.add_parser("add", help="add a mailbox (password on stdin)")
    add.add_argument("customer")
    add.add_argument("username")
    add.add_argument("address")
    msub.add_parser("list", help="list mailboxes").add_argument("customer", nargs="?")
    msub.add_parser("remove", help="remove a mailbox and all its mail").add_argument("username")
    msub.add_parser("password", help="set a mailbox's password (on stdin)"
                    ).add_argument("username")

    expire = sub.add_parser("expire", help="run the retention jobs once")
    expire.add_argument("--dry-run", action="store_true", help="only list what would go")

    backup = sub.add_parser("backup", help="copy the database, Maildirs, queue and DKIM keys "
                            "to DEST while the daemon runs (see DEST/RESTORE.txt)")
    backup.add_argument("dest", help="a directory that does not exist yet (or is empty)")

    dns = sub.add_parser("dns", help="print the DNS records to publish for a hosted domain")
    dns.add_argument("domain")

    spam = sub.add_parser("spam", help="spam filter")
    ssub = spam.add_subparsers(dest="action", required=True)
    score = ssub.add_parser("score", help="score the message on stdin: first line 'spam SCORE' "
                            "or 'ham SCORE', then the rules that fired")
    score.add_argument("--mailbox", metavar="USERNAME",
                       help="use what this mailbox's filter has learned (default: global)")
    ssub.add_parser("rules", help="list every spam rule with its score")

    queue = sub.add_parser("queue", help="the outbound mail queue")
    qsub = queue.add_subparsers(dest="action", required=True)
    qsub.add_parser("list", help="list queued messages and their recipients")
    qsub.add_parser("retry", help="try waiting recipients now (all messages, or ID)"
                    ).add_argument("id", nargs="?")
    qsub.add_parser("remove", help="delete a queued message; its sender is not told"
                    ).add_argument("id")

    dkim = sub.add_parser("dkim", help="DKIM signing keys")
    dsub = dkim.add_subparsers(dest="action", required=True)
    dsub.add_parser("show", help="print the DNS TXT record to publish for DOMAIN "
                    "(creates the key on first use)").add_argument("domain")
    return parser


def _age(seconds):
    minutes = int(max(seconds, 0) // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def _when(t, now):
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))
    return f"{stamp} (now)" if t <= now else f"{stamp} (in {_age(t - now)})"


def write_queue(entries, now, out):
    """The ``queue list`` report: one line per message, one per recipient."""
    for e in entries:
        out.write(f"{e.id}  age {_age(now - e.created)}  from <{e.sender}>  "
                  f"{e.size / 1000:.1f} kB\n")
        for r in e.recipients:
            line = f"    {r.address}  {r.state}  {r.attempts} attempt(s)"
            if r.state == "pending":
                line += f"  next {_when(r.next_attempt, now)}"
                if r.last_error:
                    line += f"  last error: {r.last_error}"
            else:
                line += f"  {r.reply}"
            out.write(line + "\n")
    pending = sum(len(e.pending) for e in entries)
    out.write(f"{len(entries)} message(s) queued, {pending} recipient(s) waiting\n")


async def run(args, core, stdin, out):
    """Carry out one command; raise Refused or a KtmailError to refuse."""
    accounts = core.accounts
    if args.group == "customer":
        if args.action == "add":
            customer = await accounts.add_customer(args.login, read_password(stdin), ACTOR)
            out.write(f"customer {customer.login} added\n")
        elif args.action == "list":
            for customer in await accounts.list_customers():
                count = len(await accounts.list_mailboxes(customer.id))
                out.write(f"{customer.login}\t{count} mailboxes\tcreated "
                          f"{_day(customer.created)}\n")
        elif args.action == "remove":
            removed = await accounts.remove_customer(args.login, ACTOR)
            out.write(f"customer {args.login} removed with {len(removed)} mailboxes\n")
        elif args.action == "password":
            await accounts.set_customer_password(args.login, read_password(stdin), ACTOR)
            out.write(f"password of customer {args.login} changed\n")
    elif args.group == "mailbox":
        if args.action == "add":
            mailbox = await accounts.add_mailbox(args.customer, args.username, args.address,
                                                 read_password(stdin), ACTOR)
            out.write(f"mailbox {mailbox.username} <{mailbox.address}> added\n")
        elif args.action == "list":
            customer_id = None
            if args.customer:
                customer_id = (await accounts.get_customer(args.customer)).id
            owners = {c.id: c.login for c in await accounts.list_customers()}
            for m in await accounts.list_mailboxes(customer_id):
                used = await core.mail.usage(m.id)
                out.write(f"{m.username}\t{m.address}\t{owners.get(m.customer_id, '?')}\t"
                          f"{_mb(used)} of {_mb(m.quota_bytes)}\tlast login "
                          f"{_day(m.last_login)}\n")
        elif args.action == "remove":
            mailbox = await accounts.remove_mailbox(args.username, ACTOR, "by operator")
            out.write(f"mailbox {mailbox.username} <{mailbox.address}> removed with all "
                      "its mail\n")
        elif args.action == "password":
            await accounts.set_mailbox_password(args.username, read_password(stdin), ACTOR)
            out.write(f"password of mailbox {args.username} changed\n")
    elif args.group == "queue":
        from ktmail.services.outbound import QueueAdmin

        admin = QueueAdmin(core.queue_store, core.reactor)
        if args.action == "list":
            write_queue(await admin.list(), core.reactor.seconds(), out)
        elif args.action == "retry":
            changed = await admin.retry(args.id)
            out.write(f"{changed} message(s) will be tried again within seconds\n")
        elif args.action == "remove":
            entry = await admin.remove(args.id)
            out.write(f"message {entry.id} removed ({len(entry.pending)} recipient(s) had "
                      "not received it)\n")
    elif args.group == "dkim":
        from ktmail.services.dkim import published_record

        config = core.config
        name, value = await published_record(core.dkim_keys, args.domain,
                                             set(config.domains) | {config.hostname})
        # TXT strings are at most 255 bytes (RFC 1035 §3.3.14): split the value
        parts = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
        out.write(f"{name}. IN TXT ( {parts} )\n")
    elif args.group == "dns":
        domain = args.domain.strip().lower().rstrip(".")
        if domain not in core.config.domains:
            raise Refused(f"{args.domain} is not one of the hosted domains "
                          f"({', '.join(core.config.domains)})")
        settings = ClientSettings.from_config(core.config)
        from ktmail.services.dkim import published_record

        name, value = await published_record(core.dkim_keys, domain, set(core.config.domains))
        dkim = [(name.split("._domainkey.")[0], value)]
        out.write("\n".join(dns_records(domain, settings, dkim)) + "\n")
    elif args.group == "expire":
        await expire(core, args.dry_run, out)
    elif args.group == "backup":
        from ktmail.tap import backup_data

        summary = await backup_data(core, args.dest)   # BackupError is a KtmailError
        dest = os.path.abspath(args.dest)
        out.write(f"database: {summary.database}\n"
                  f"mail: {summary.mailboxes} mailboxes, {summary.messages} messages, "
                  f"{_mb(summary.bytes)}\n"
                  f"queue: {summary.queue_files} files; DKIM keys: {summary.dkim_files} files\n"
                  f"backup in {dest}; how to restore it: {dest}/RESTORE.txt\n")
    elif args.group == "spam":
        if args.action == "score":
            await spam_score(core, args.mailbox, stdin, out)
        elif args.action == "rules":
            for rule, points in sorted(((r, core.spam.rules.score_of(r))
                                        for r in ALL_RULES.values()), key=lambda p: p[0].name):
                out.write(f"{rule.name:<28}{points:7.1f}  {rule.description}\n")


async def expire(core, dry_run, out):
    """Run every retention job once (Spam expiry, inactive mailboxes);
    ``--dry-run`` lists what would go, with the dates, and changes nothing."""
    for name, reports in await run_all(core.retention_jobs, dry_run):
        if name == "inactivity":
            for action in reports:
                out.write(inactivity_line(action, dry_run) + "\n")
            gone = sum(1 for a in reports if a.kind == "delete")
            out.write(f"{name}: {'would delete' if dry_run else 'deleted'} {gone} mailboxes, "
                      f"{'would warn' if dry_run else 'warned'} {len(reports) - gone}\n")
            continue
        verb = "would delete" if dry_run else "deleted"
        total = 0
        for report in reports:
            total += len(report.uids)
            arrived = ", ".join(f"{uid} ({_day(at)})" for uid, at in report.arrived)
            out.write(f"{name}\t{report.mailbox.username}\t{report.folder}\t{verb} "
                      f"{len(report.uids)} messages, UIDs (arrived): {arrived}\n")
        out.write(f"{name}: {verb} {total} messages in {len(reports)} mailboxes\n")


def inactivity_line(action, dry_run):
    m = action.mailbox
    unused = f"last login {_day(m.last_login)}, created {_day(m.created)}"
    if action.kind == "delete":
        verb = "would delete" if dry_run else "deleted"
        return f"inactivity\t{m.username}\t{m.address}\t{verb} the mailbox ({unused})"
    verb = "would warn" if dry_run else "warned"
    return (f"inactivity\t{m.username}\t{m.address}\t{verb}: deleted on "
            f"{_day(action.delete_at)} unless someone logs in ({unused})")


async def spam_score(core, username, stdin, out):
    """Score the message on standard input with the service's filter (its
    rules, scores and learned statistics). SPF/DKIM/DMARC need the SMTP
    session and live DNS: they are checked at delivery, not here."""
    mailbox = None
    if username:
        mailbox = await core.accounts.get_mailbox(username)
    source = getattr(stdin, "buffer", None)
    with tempfile.NamedTemporaryFile(prefix="ktmail-spam-", suffix=".eml") as spool:
        if source is not None:
            shutil.copyfileobj(source, spool, 1 << 20)
        else:  # a text stream (tests)
            spool.write(stdin.read().encode("utf-8", "surrogateescape"))
        spool.flush()
        if os.fstat(spool.fileno()).st_size == 0:
            raise Refused("spam score: no message on standard input")
        verdict = await core.spam.scan(spool.name, None, mailbox)
    out.write(f"{'spam' if verdict.is_spam else 'ham'} {verdict.score:.1f}\n")
    for hit in verdict.hits:
        out.write(f"{hit.name:<28}{hit.score:7.1f}  {hit.description}\n")


def main(argv=None, stdin=None, out=None, err=None):
    stdin, out, err = stdin or sys.stdin, out or sys.stdout, err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on a usage error
    try:
        config = load_config(args.config)
    except ConfigError as e:
        err.write(e.summary() + "\n")
        return EXIT_REFUSED

    status = [EXIT_OK]

    async def command(reactor):
        from ktmail.tap import build_core

        try:
            core = build_core(config, reactor)
        except (errors.ValidationError, errors.StoreUnavailable) as e:
            err.write(f"{config.path}: {e.text}\n")
            status[0] = EXIT_REFUSED
            return
        try:
            await run(args, core, stdin, out)
        except (Refused, errors.KtmailError) as e:
            err.write(f"ktmail-admin: {getattr(e, 'text', None) or e}\n")
            status[0] = EXIT_REFUSED
        finally:
            core.db.close()

    def react_main(reactor):
        return defer.Deferred.fromCoroutine(command(reactor))

    try:
        task.react(react_main)
    except SystemExit as e:
        if e.code not in (0, None):
            return EXIT_REFUSED
    return status[0]


if __name__ == "__main__":
    sys.exit(main())
