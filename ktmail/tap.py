"""The composition root: ``twistd ktmail --config F``.

The only module that touches the global reactor and reads the real clock.
It loads the config once, builds the stores and services with their exact
collaborators, and starts one listener per enabled ``[listen]`` entry.
A bad config stops start-up with one line per problem.
"""

import os
import sys

import attrs
from twisted.application import service, strports
from twisted.internet import threads
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.web.server import Site

from ktmail import tls
from ktmail.config import ConfigError, load_config
from ktmail.services.accounts import AccountService
from ktmail.services.auth import AuthService, LoginThrottle, PasswordHasher
from ktmail.store.maildir import MaildirStore
from ktmail.store.sqlite import Database, SQLiteStore, ThreadRunner
from ktmail.web.app import WebRoot


class Options(usage.Options):
    synopsis = "--config ktmail.ini"
    optParameters = [
        ["config", "c", "ktmail.ini", "the configuration file (SPEC §3)"],
    ]

    def postOptions(self):
        try:
            self["loaded"] = load_config(self["config"])
        except ConfigError as e:
            # one line per problem, no usage text: the operator needs the key
            sys.stderr.write(e.summary() + "\n")
            raise SystemExit(1)


def reactor_thread_runner(reactor):
    """run_in_thread(fn, *args) -> Deferred, on the reactor's thread pool."""
    def run(fn, *args):
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)
    return run


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


def build_core(config, reactor):
    """Stores and services, wired; shared by the daemon and ktmail-admin."""
    os.makedirs(config.data_dir, exist_ok=True)
    run_in_thread = reactor_thread_runner(reactor)
    db = Database(os.path.join(config.data_dir, "ktmail.db"), ThreadRunner(reactor))
    store = SQLiteStore(db)
    mail = MaildirStore(config.data_dir, reactor, run_in_thread)
    hasher = PasswordHasher(run_in_thread)
    throttle = LoginThrottle(store, reactor)
    auth = AuthService(store, hasher, throttle, reactor)
    accounts = AccountService(store, mail, store, hasher, config.domains, config.limits,
                              reactor)
    return Core(config=config, reactor=reactor, db=db, store=store, mail=mail, hasher=hasher,
                throttle=throttle, auth=auth, accounts=accounts)


def listen(parent, reactor, config, name, factory, tls_context=None):
    """Start ``factory`` on the ``[listen] name`` endpoint; ``ssl:`` entries
    without their own key get the configured certificate."""
    description = getattr(config.listen, name)
    plain = tls.as_plain_endpoint(description)
    if plain is not None:
        factory = TLSMemoryBIOFactory(tls_context, False, factory)
        description = plain
    svc = strports.service(description, factory, reactor=reactor)
    svc.setName(f"listen-{name}")
    svc.setServiceParent(parent)
    return svc


def makeService(options):
    from twisted.internet import reactor

    config = options["loaded"]
    core = build_core(config, reactor)
    top = service.MultiService()
    _DatabaseService(core.db).setServiceParent(top)
    tls_context = tls.server_context(config.tls) if config.tls else None

    if config.listen.web:
        web = WebRoot(health_checks={"database": core.db.ping})
        listen(top, reactor, config, "web", Site(web.resource()), tls_context)
    return top
