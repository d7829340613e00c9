"""The composition root: ``twistd ktmail --config F``.

The only module that touches the global reactor and reads the real clock.
It loads the config once, builds the stores and services with their exact
collaborators, and starts one listener per enabled ``[listen]`` entry.
A bad config stops start-up with one line per problem.
"""

import os
import sys

import attrs
from twisted.application import internet, service, strports
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.names import client as dns_client
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage

from ktmail import errors, proxy_protocol, tls
from ktmail.config import ConfigError, load_config
from ktmail.errors import ValidationError
from ktmail.proxy_protocol import ProxyHeaderFactory
from ktmail.protocols.pop3 import POP3Factory
from ktmail.protocols.imap import IMAPFactory, ImapContext
from ktmail.protocols.reverse_dns import ReverseDNS
from ktmail.protocols.smtp import InboundSMTPFactory, SubmissionSMTPFactory
from ktmail.protocols.smtp_client import SMTPDeliveryClient, tcp_endpoint_factory
from ktmail.services.accounts import AccountService
from ktmail.services.auth import AuthService, LoginThrottle, PasswordHasher
from ktmail.services.bounces import AfterDataBounces
from ktmail.services.delivery import DeliveryService
from ktmail.services.dkim import DkimSigner
from ktmail.services.maildrop import MaildropService
from ktmail.services.mailboxes import MailboxService
from ktmail.services.outbound import OutboundQueue, OutboundScheduler
from ktmail.services.retention import InactivityJob, InactivityPolicy, SpamExpiryJob
from ktmail.services.routing import MXRouter
from ktmail.services.spam import SpamFilter, check_rule_names
from ktmail.services.spam.auth import TwistedNamesResolver
from ktmail.services.submission import SubmissionService
from ktmail.store.database import folder_change_feed, open_stores
from ktmail.store.dkimkeys import DiskDkimKeyStore
from ktmail.store.health import StorageProbe, with_timeout
from ktmail.store.maildir import MaildirStore
from ktmail.store.queue import DiskQueueStore
from ktmail.store.sqlite import ThreadRunner
from ktmail.web.app import build_root, make_site
from ktmail.web.sessions import MAILBOX

log = Logger()


class Options(usage.Options):
    synopsis = "--config ktmail.ini"
    optParameters = [
        ["config", "c", "ktmail.ini", "the configuration file (SPEC §3)"],
    ]

    def postOptions(self):
        try:
            self["loaded"] = load_config(self["config"])
            check_rule_names(self["loaded"].spam.score_overrides())
        except ConfigError as e:
            # one line per problem, no usage text: the operator needs the key
            sys.stderr.write(e.summary() + "\n")
            raise SystemExit(1)
        except ValidationError as e:
            sys.stderr.write(f"{self['config']}: {e.text}\n")
            raise SystemExit(1)


def reactor_thread_runner(reactor):
    """run_in_thread(fn, *args) -> Deferred, on the reactor's thread pool."""
    def run(fn, *args):
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)
    return run


class _MailHousekeeping(service.Service):
    """At daemon start (never in ktmail-admin, which may run beside it):
    remove stale tmp/ files of every Maildir and spool files of earlier
    runs, in the background."""

    def __init__(self, core):
        self.core = core

    def startService(self):
        service.Service.startService(self)
        for what, clean in (("stale Maildir tmp/ files", self.core.mail.clean_stale_files),
                            ("stale spool files", self.core.delivery.clean_spool)):
            d = clean()
            d.addCallback(lambda n, what=what: n and log.info(
                "removed {n} {what}", n=n, what=what))
            d.addErrback(lambda f, what=what: log.failure(
                "removing {what} failed", f, what=what))


class _DatabaseService(service.Service):
    """Starts the database thread pool with the daemon and closes it at stop."""

    def __init__(self, db):
        self.db = db

    def stopService(self):
        service.Service.stopService(self)
        self.db.close()


@attrs.define
class Core:
    """The stores and services of one daemon (or one ktmail-admin run)."""

    config: object
    reactor: object
    db: object
    store: object
    mail: object
    hasher: object
    throttle: object
    auth: object
    accounts: object
    queue_store: object = None
    dkim_keys: object = None
    spam_stats: object = None
    #: services.spam.SpamFilter
    spam: object = None
    #: services.mailboxes.MailboxService (IMAP, POP3, webmail)
    mailboxes: object = None
    #: services.delivery.DeliveryService (SMTP, outbound DSNs, webmail, lifecycle)
    delivery: object = None
    #: jobs with name / run_once(dry_run): Spam expiry, inactivity
    retention_jobs: list = attrs.Factory(list)
    #: store.database.Stores: which database, and what else it carries
    stores: object = None


def build_core(config, reactor, resolver=None):
    """Stores and services, wired; shared by the daemon and ktmail-admin.
    ``resolver``: the spam filter's DNS (auth.DNSResolver), None: no
    SPF/DKIM/DMARC checks (ktmail-admin)."""
    os.makedirs(config.data_dir, exist_ok=True)
    run_in_thread = reactor_thread_runner(reactor)
    # [store] database: SQLite, or PostgreSQL for several nodes (folder indexes too)
    stores = open_stores(config.database_config, ThreadRunner(reactor))
    db, store = stores.db, stores.accounts
    mail = MaildirStore(config.data_dir, reactor, run_in_thread,
                        index_backend=stores.index_backend)
    hasher = PasswordHasher(run_in_thread)
    throttle = LoginThrottle(store, reactor)
    auth = AuthService(store, hasher, throttle, reactor)
    accounts = AccountService(store, mail, store, hasher, config.domains, config.limits,
                              reactor)
    spam_stats = stores.spam_stats
    spam = SpamFilter(config.spam, spam_stats, run_in_thread, reactor, resolver=resolver,
                      hostname=config.hostname)
    mailboxes = MailboxService(mail, spam, config.limits, reactor)
    delivery = DeliveryService(store, mailboxes, spam, config.limits, config.domains, reactor,
                               os.path.join(config.data_dir, "spool"), run_in_thread,
                               postmaster=config.postmaster)
    # sessions of a removed mailbox lose their folders with it
    accounts.removal_hooks.append(mailboxes.close_mailbox)
    accounts.removal_hooks.append(spam.forget_mailbox)
    retention_jobs = [
        SpamExpiryJob(store, mailboxes, config.limits, reactor, audit=store),
        InactivityJob(accounts, delivery.deliver_notice, reactor,
                      InactivityPolicy(delete_after_days=config.limits.inactive_delete_days),
                      config.hostname),
    ]
    return Core(config=config, reactor=reactor, db=db, store=store, mail=mail, hasher=hasher,
                throttle=throttle, auth=auth, accounts=accounts, spam_stats=spam_stats,
                spam=spam, retention_jobs=retention_jobs,
                queue_store=DiskQueueStore(config.data_dir, run_in_thread),
                dkim_keys=DiskDkimKeyStore(config.data_dir, run_in_thread),
                mailboxes=mailboxes, delivery=delivery, stores=stores)


def _local_delivery_unavailable(recipient, message_file):
    """Stand-in ``deliver_local`` until the delivery service is wired in:
    DSNs to our own users wait in the queue (temporary failure)."""
    return defer.fail(errors.StoreUnavailable("Local delivery is not available."))


def build_outbound(core, reactor, deliver_local=_local_delivery_unavailable):
    """The outbound queue and its scheduler service (SPEC §5): MX lookups
    through the system's resolver, or the ``[relay] smarthost``."""
    config = core.config
    run_in_thread = reactor_thread_runner(reactor)
    signer = DkimSigner(core.dkim_keys, run_in_thread, reactor, config.domains,
                        config.hostname)
    router = MXRouter(dns_client.createResolver(), config.relay.smarthost)
    client = SMTPDeliveryClient(tcp_endpoint_factory(reactor), reactor, config.hostname)
    queue = OutboundQueue(core.queue_store, signer, router, client, deliver_local, reactor,
                          config.hostname, config.domains)
    return queue, OutboundScheduler(queue, reactor)


def listen(parent, reactor, config, name, factory, tls_context=None):
    """Start ``factory`` on the ``[listen] name`` endpoint; ``ssl:`` entries
    without their own key get the configured certificate."""
    description = getattr(config.listen, name)
    # haproxy:... - the PROXY header comes first, before TLS and the protocol
    description, proxied = proxy_protocol.split_description(description)
    plain = tls.as_plain_endpoint(description)
    if plain is not None:
        factory = TLSMemoryBIOFactory(tls_context, False, factory)
        description = plain
    if proxied:
        factory = ProxyHeaderFactory(factory, reactor)
    svc = strports.service(description, factory, reactor=reactor)
    svc.setName(f"listen-{name}")
    svc.setServiceParent(parent)
    return svc


def add_folder_change_feed(parent, core, reactor):
    """With PostgreSQL: changes other nodes make to folders reach this
    node's live folders (IMAP IDLE, POP3, webmail) at once."""
    def resync():
        core.mailboxes.refresh_all().addErrback(
            lambda f: log.failure("refreshing the live folders failed", f))
    feed = folder_change_feed(core.stores, reactor, core.mailboxes.folder_changed, resync)
    if feed is not None:
        feed.setServiceParent(parent)


def health_checks(core, reactor):
    """``/healthz``: the database answers; the data directory is writable
    and the Maildir root and queue reachable (each within 5 seconds)."""
    config = core.config
    storage = StorageProbe(config.data_dir, (os.path.join(config.data_dir, "mail"),
                                             os.path.join(config.data_dir, "queue")),
                           reactor_thread_runner(reactor), reactor)
    return {"database": with_timeout(core.db.ping, reactor),
            "storage": storage.check}


def reverse_dns(reactor):
    """Forward-confirmed reverse DNS for Received: fields, with short
    timeouts; None when no name server is configured."""
    try:
        resolver = dns_client.Resolver(resolv="/etc/resolv.conf", timeout=(2, 3), reactor=reactor)
    except (ValueError, OSError):
        return None
    return ReverseDNS(resolver, reactor)


def build_submission(config, core, reactor, outbound):
    """The submission policy shared by SMTP submission and the webmail."""
    return SubmissionService(
        delivery=core.delivery, outbound=outbound, counters=core.store,
        limits=config.limits, domains=config.domains, hostname=config.hostname,
        clock=reactor)


def listen_smtp(parent, reactor, config, core, tls_context, outbound, submission=None):
    """The MX (``smtp``, STARTTLS with the configured certificate) and the
    submission (``submission``, implicit TLS; remote recipients go to the
    ``outbound`` queue) listeners."""
    delivery = core.delivery
    common = dict(hostname=config.hostname, clock=reactor, delivery=delivery,
                  max_message_bytes=config.limits.max_message_bytes,
                  reverse_dns=reverse_dns(reactor), postmaster_domain=config.domains[0],
                  bounces=AfterDataBounces(outbound, delivery, config.hostname, reactor))
    if config.listen.smtp:
        listen(parent, reactor, config, "smtp",
               InboundSMTPFactory(tls_context=tls_context, **common), tls_context)
    if config.listen.submission:
        submission = submission or build_submission(config, core, reactor, outbound)
        # implicit TLS comes from the listener; no STARTTLS inside it
        listen(parent, reactor, config, "submission",
               SubmissionSMTPFactory(auth=core.auth, submission=submission, **common),
               tls_context)


def makeService(options):
    from twisted.internet import reactor

    config = options["loaded"]
    # hosts file + cache + the resolvers of /etc/resolv.conf, on the global reactor
    resolver = TwistedNamesResolver(dns_client.createResolver())
    try:
        core = build_core(config, reactor, resolver=resolver)
    except (errors.ValidationError, errors.StoreUnavailable) as e:
        # one line for the operator (the database URL's password is never in it)
        sys.stderr.write(f"{config.path}: {e.text}\n")
        raise SystemExit(1)
    top = service.MultiService()
    _DatabaseService(core.db).setServiceParent(top)
    log.info("service database: {where}", where=config.database_config.display())
    for job in core.retention_jobs:
        job.service().setServiceParent(top)
    core.spam.pruning_service().setServiceParent(top)
    tls_context = tls.server_context(config.tls) if config.tls else None
    _MailHousekeeping(core).setServiceParent(top)
    # changes made by ktmail-admin or other Maildir tools reach open sessions
    internet.TimerService(5, core.mailboxes.refresh_all).setServiceParent(top)
    add_folder_change_feed(top, core, reactor)
    # build_outbound(...)[0].enqueue is what submission and webmail hand remote mail to
    outbound_queue, outbound_scheduler = build_outbound(
        core, reactor, deliver_local=core.delivery.deliver_local)
    outbound_scheduler.setServiceParent(top)

    if config.listen.imap:
        imap = IMAPFactory(ImapContext(
            auth=core.auth, mailboxes=core.mailboxes, new_spool=core.delivery.new_spool,
            run_in_thread=reactor_thread_runner(reactor), clock=reactor,
            max_message_bytes=config.limits.max_message_bytes))
        listen(top, reactor, config, "imap", imap, tls_context)
    submission = build_submission(config, core, reactor, outbound_queue)
    if config.listen.web:
        web = build_root(config, reactor, core.accounts, core.auth, core.mail,
                         health_checks=health_checks(core, reactor),
                         mailboxes=core.mailboxes, submission=submission,
                         delivery=core.delivery, run_in_thread=reactor_thread_runner(reactor),
                         spam_rules=core.spam.rules)
        sessions = web.web.sessions
        # a removed mailbox's webmail sessions end with it
        core.accounts.removal_hooks.append(
            lambda mailbox: sessions.destroy_account(MAILBOX, mailbox.username))
        internet.TimerService(300, sessions.sweep).setServiceParent(top)
        # attachments of messages never sent (their sessions are over)
        uploads = web.webmail.uploads
        internet.TimerService(3600, lambda: threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), uploads.sweep, reactor.seconds()).addErrback(
                lambda f: log.failure("sweeping webmail uploads failed", f))
        ).setServiceParent(top)
        listen(top, reactor, config, "web", make_site(web, config.limits), tls_context)

    if config.listen.pop3:
        maildrops = MaildropService(core.mailboxes)
        listen(top, reactor, config, "pop3",
               POP3Factory(core.auth, maildrops, reactor, config.hostname), tls_context)
    if config.listen.smtp or config.listen.submission:
        listen_smtp(top, reactor, config, core, tls_context, outbound_queue, submission)
    return top
