"""The composition root: ``twistd ktmail --config F``.

The only module that touches the global reactor and reads the real clock.
It loads the config once, builds the stores and services with their exact
collaborators, and starts one listener per enabled ``[listen]`` entry.
A bad config stops start-up with one line per problem.
"""

import datetime
import os
import resource
import signal
import sys

import attrs
from twisted.application import internet, service, strports
from twisted.internet import defer, threads
from twisted.logger import Logger, globalLogPublisher
from twisted.names import client as dns_client
from twisted.python import usage

from ktmail import errors, proxy_protocol, tls
from ktmail.config import ConfigError, Limits, load_config
from ktmail.errors import ValidationError
from ktmail.mime import HeaderLimits
from ktmail.protocols.admission import Admission, AdmissionFactory, AdmissionPolicy
from ktmail.protocols.imap import ImapContext, IMAPFactory
from ktmail.protocols.mtasts_fetch import HTTPSPolicyFetcher
from ktmail.protocols.pop3 import POP3Factory
from ktmail.protocols.reverse_dns import ReverseDNS
from ktmail.protocols.smtp import InboundSMTPFactory, SubmissionSMTPFactory
from ktmail.protocols.smtp_client import SMTPDeliveryClient, tcp_endpoint_factory
from ktmail.proxy_protocol import ProxyHeaderFactory
from ktmail.services.accounts import AccountService
from ktmail.services.auth import AuthService, LoginThrottle, PasswordHasher
from ktmail.services.bounces import AfterDataBounces
from ktmail.services.delivery import DeliveryService
from ktmail.services.dkim import DkimSigner
from ktmail.services.mailboxes import MailboxService
from ktmail.services.maildrop import MaildropService
from ktmail.services.metrics import EventCounters, MetricsReport, QuotaSurvey
from ktmail.services.mtasts import PolicyResolver
from ktmail.services.outbound import OutboundQueue, OutboundScheduler
from ktmail.services.retention import InactivityJob, InactivityPolicy, SpamExpiryJob
from ktmail.services.routing import MXRouter
from ktmail.services.spam import SpamFilter, check_rule_names
from ktmail.services.spam.auth import TwistedNamesResolver
from ktmail.services.submission import SubmissionService
from ktmail.store.backup import DataBackup
from ktmail.store.database import folder_change_feed, open_stores
from ktmail.store.dkimkeys import DiskDkimKeyStore
from ktmail.store.health import StorageProbe, with_timeout
from ktmail.store.maildir import MaildirStore
from ktmail.store.mtasts import DiskMTASTSCache
from ktmail.store.queue import DiskQueueStore
from ktmail.store.sqlite import ThreadRunner
from ktmail.web.app import build_root, make_site
from ktmail.web.metrics import make_metrics_site
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


def backup_data(core, dest):
    """``ktmail-admin backup DEST`` -> Deferred[store.backup.BackupSummary]
    (BackupError when it cannot be made)."""
    config = core.config
    database = config.database_config
    backup = DataBackup(config.data_dir, database, sqlite_indexes=not database.is_postgresql)
    when = datetime.datetime.fromtimestamp(core.reactor.seconds(), datetime.timezone.utc)
    return threads.deferToThreadPool(core.reactor, core.reactor.getThreadPool(), backup.run,
                                     dest, when.strftime("%Y-%m-%d %H:%M:%S UTC"))


def _local_delivery_unavailable(recipient, message_file):
    """Stand-in ``deliver_local`` until the delivery service is wired in:
    DSNs to our own users wait in the queue (temporary failure)."""
    return defer.fail(errors.StoreUnavailable("Local delivery is not available."))


def build_outbound(core, reactor, deliver_local=_local_delivery_unavailable):
    """The outbound queue and its scheduler service (SPEC §5): MX lookups
    through the system's resolver, or the ``[relay] smarthost``; MTA-STS
    (RFC 8461) for MX deliveries, its policies cached in
    ``<data_dir>/mta-sts/``."""
    config = core.config
    run_in_thread = reactor_thread_runner(reactor)
    signer = DkimSigner(core.dkim_keys, run_in_thread, reactor, config.domains,
                        config.hostname)
    resolver = dns_client.createResolver()
    router = MXRouter(resolver, config.relay.smarthost)
    client = SMTPDeliveryClient(tcp_endpoint_factory(reactor), reactor, config.hostname)
    mta_sts = None
    if not config.relay.smarthost:
        mta_sts = PolicyResolver(resolver, HTTPSPolicyFetcher(reactor),
                                 DiskMTASTSCache(config.data_dir, run_in_thread), reactor)
    queue = OutboundQueue(core.queue_store, signer, router, client, deliver_local, reactor,
                          config.hostname, config.domains, mta_sts=mta_sts)
    return queue, OutboundScheduler(queue, reactor)


@attrs.define
class Listeners:
    """What the daemon's listeners share with its operations: the TLS
    contexts that SIGHUP reloads and the admissions that /metrics counts."""

    #: tls.ReloadableServerContext of every TLS listener (and STARTTLS)
    contexts: list = attrs.Factory(list)
    #: listener name -> admission.Admission
    admissions: dict = attrs.Factory(dict)

    def add_context(self, context):
        if context is not None and all(c is not context for c in self.contexts):
            self.contexts.append(context)


def listen(parent, reactor, config, name, factory, tls_context=None, listeners=None):
    """Start ``factory`` on the ``[listen] name`` endpoint.

    The stack, outside in: the PROXY header (``haproxy:``), the admission
    caps of the listener, TLS (``ssl:``: with the configured certificate,
    or the endpoint's own ``privateKey=``, always with ktmail's policy and
    a handshake deadline), the protocol."""
    listeners = listeners if listeners is not None else Listeners()
    limits = getattr(config, "limits", None) or Limits()
    description = getattr(config.listen, name)
    # haproxy:... - the PROXY header comes first, before TLS and the protocol
    description, proxied = proxy_protocol.split_description(description)
    description, own_tls = tls.split_tls(description)
    refusal = getattr(factory, "refusal", None)
    if own_tls is not False:
        context = tls_context if own_tls is None else tls.server_context(own_tls)
        listeners.add_context(context)
        factory = tls.ServerTLSFactory(context, factory, reactor, limits.tls_handshake_timeout)
        refusal = None   # nothing can be said before the handshake
    description = with_backlog(description)
    per_client, total = limits.connection_caps(name)
    admission = Admission(name, AdmissionPolicy(per_client, total,
                                                limits.connection_limit_exempt))
    listeners.admissions[name] = admission
    factory = AdmissionFactory(factory, admission, reactor, refusal)
    if proxied:
        factory = ProxyHeaderFactory(factory, reactor)
    svc = strports.service(description, factory, reactor=reactor)
    svc.setName(f"listen-{name}")
    svc.setServiceParent(parent)
    return svc


#: connections the kernel queues for a listener before the daemon accepts
#: them (Twisted's default, 50, drops SYNs in a burst of reconnecting
#: clients or a flood: each dropped one costs its client a second)
LISTEN_BACKLOG = 1024


def with_backlog(description):
    """A ``tcp:``/``tcp6:``/``unix:`` description with ``backlog=`` set, if
    it says none."""
    kind = description.split(":", 1)[0]
    if kind in ("tcp", "tcp6", "unix") and "backlog=" not in description:
        return f"{description}:backlog={LISTEN_BACKLOG}"
    return description


class CertificateReload(service.Service):
    """SIGHUP reloads every TLS certificate (after a renewal): new
    handshakes get the new one, open connections keep theirs; a file that
    cannot be used leaves the old certificate in service."""

    name = "certificate-reload"

    def __init__(self, listeners, reactor):
        self.listeners = listeners
        self.reactor = reactor
        self._previous = None

    def startService(self):
        service.Service.startService(self)
        self._previous = signal.signal(
            signal.SIGHUP, lambda signum, frame: self.reactor.callFromThread(self.reload))

    def stopService(self):
        service.Service.stopService(self)
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def reload(self):
        """-> Deferred fired when every context was reloaded (or kept)."""
        run = reactor_thread_runner(self.reactor)
        done = []
        for context in self.listeners.contexts:
            d = run(context.load)
            d.addCallback(lambda options, context=context: (
                context.swap(options),
                log.info("TLS certificate reloaded from {cert}: {what}",
                         cert=context.tls_config.cert, what=context.describe())))
            d.addErrback(lambda f, context=context: log.error(
                "TLS certificate NOT reloaded, the old one stays in use: {why}",
                why=f.getErrorMessage() if f.check(tls.CertificateError) else repr(f.value)))
            done.append(d)
        return defer.DeferredList(done)


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


def header_limits(limits):
    return HeaderLimits(max_bytes=limits.max_header_bytes,
                        max_fields=limits.max_header_fields)


def listen_smtp(parent, reactor, config, core, tls_context, outbound, submission=None,
                listeners=None):
    """The MX (``smtp``, STARTTLS with the configured certificate) and the
    submission (``submission``, implicit TLS; remote recipients go to the
    ``outbound`` queue) listeners."""
    delivery = core.delivery
    limits = config.limits
    common = dict(hostname=config.hostname, clock=reactor, delivery=delivery,
                  max_message_bytes=limits.max_message_bytes,
                  reverse_dns=reverse_dns(reactor), postmaster_domain=config.domains[0],
                  bounces=AfterDataBounces(outbound, delivery, config.hostname, reactor),
                  command_timeout=limits.smtp_command_timeout,
                  header_limits=header_limits(limits))
    if config.listen.smtp:
        if listeners is not None:
            listeners.add_context(tls_context)   # STARTTLS
        listen(parent, reactor, config, "smtp",
               InboundSMTPFactory(tls_context=tls_context, **common), tls_context, listeners)
    if config.listen.submission:
        submission = submission or build_submission(config, core, reactor, outbound)
        # implicit TLS comes from the listener; no STARTTLS inside it
        listen(parent, reactor, config, "submission",
               SubmissionSMTPFactory(auth=core.auth, submission=submission, **common),
               tls_context, listeners)


class EventCounting(service.Service):
    """Counts the structured log events (for /metrics) while the daemon runs."""

    def __init__(self, counters):
        self.counters = counters

    def startService(self):
        service.Service.startService(self)
        globalLogPublisher.addObserver(self.counters)

    def stopService(self):
        service.Service.stopService(self)
        globalLogPublisher.removeObserver(self.counters)


def process_stats():
    """Open file descriptors, their limit and resident memory, from /proc."""
    try:
        open_fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_fds = 0
    try:
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        resident = 0
    return {"open_fds": open_fds, "max_fds": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "resident_bytes": resident}


def add_metrics(top, reactor, config, core, listeners, tls_context):
    """Event counting and the quota survey always (cheap); the ``metrics``
    listener when configured."""
    counters = EventCounters()
    EventCounting(counters).setServiceParent(top)
    survey = QuotaSurvey(list_mailboxes=lambda: core.accounts.list_mailboxes(None),
                         usage=core.mail.usage, clock=reactor)
    if not config.listen.metrics:
        return None
    internet.TimerService(300, survey.run).setServiceParent(top)
    report = MetricsReport(
        counters=counters,
        connections=lambda: {name: a.open for name, a in listeners.admissions.items()
                             if name != "metrics"},
        queue_entries=core.queue_store.list_entries, survey=survey, process=process_stats,
        clock=reactor, started=reactor.seconds())
    listen(top, reactor, config, "metrics", make_metrics_site(report), tls_context, listeners)
    return report


def raise_file_limit():
    """Up to the hard limit: every connection is a file descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 65536)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def check_file_limit(config):
    """Warn when the listeners' connection caps can exceed the descriptors."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    caps = sum(config.limits.connection_caps(name)[1]
               for name, description in config.listen.enabled() if name != "metrics")
    if caps + 200 > soft:
        log.warn("the connection caps ([limits] *_connections, {caps} in all) exceed the "
                 "file descriptor limit ({soft}); raise LimitNOFILE (ulimit -n) or lower "
                 "the caps", caps=caps, soft=soft)


def makeService(options):
    from twisted.internet import reactor

    config = options["loaded"]
    raise_file_limit()
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
    listeners = Listeners()
    try:
        tls_context = tls.server_context(config.tls) if config.tls else None
        if tls_context is not None:
            log.info("TLS certificate {cert}: {what}", cert=config.tls.cert,
                     what=tls_context.describe())
    except tls.CertificateError as e:
        sys.stderr.write(f"{config.path}: {e}\n")
        raise SystemExit(1)
    CertificateReload(listeners, reactor).setServiceParent(top)
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
            max_message_bytes=config.limits.max_message_bytes,
            sessions_per_mailbox=config.limits.imap_sessions_per_mailbox,
            login_timeout=config.limits.imap_login_timeout,
            idle_timeout=config.limits.imap_idle_timeout,
            header_limits=header_limits(config.limits)))
        listen(top, reactor, config, "imap", imap, tls_context, listeners)
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
        listen(top, reactor, config, "web",
               make_site(web, config.limits, timeout=config.limits.web_idle_timeout),
               tls_context, listeners)

    if config.listen.pop3:
        maildrops = MaildropService(core.mailboxes)
        listen(top, reactor, config, "pop3",
               POP3Factory(core.auth, maildrops, reactor, config.hostname,
                           idle_timeout=config.limits.pop3_idle_timeout),
               tls_context, listeners)
    if config.listen.smtp or config.listen.submission:
        listen_smtp(top, reactor, config, core, tls_context, outbound_queue, submission,
                    listeners)
    add_metrics(top, reactor, config, core, listeners, tls_context)
    check_file_limit(config)
    return top
