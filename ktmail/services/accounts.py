"""Customers and mailboxes: create, delete, change passwords.

The portal and ``ktmail-admin`` both call this service, never the store,
so the rules cannot differ between them: usernames and passwords are
checked here, addresses must be on a hosted domain, a customer has at most
``limits.mailboxes_per_customer`` mailboxes (checked atomically by the
store), and removing a mailbox removes its Maildir and everything learned
about it (``removal_hooks``). Every removal is written to the audit log.
"""

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from ktmail import errors
from ktmail.model import (
    Address,
    check_password,
    normalize_domain,
    normalize_local_part,
    normalize_username,
)
from ktmail.services import deferred

log = Logger()


@attrs.define
class AccountService:
    accounts: object      # IAccountStore
    mail: object          # IMailStore
    audit: object         # IAuditLog
    hasher: object        # services.auth.PasswordHasher
    domains: tuple
    limits: object        # config.Limits
    clock: object         # IReactorTime
    #: callables(mailbox) -> None | Deferred, run after a mailbox is removed
    #: (learned spam data, open sessions, ...)
    removal_hooks: list = attrs.field(factory=list)

    def parse_address(self, text=None, *, local_part=None, domain=None):
        """A hosted address from ``local@domain`` or from its two parts."""
        if text is not None:
            address = Address.parse(text)
        else:
            address = Address(normalize_local_part(local_part or ""),
                              normalize_domain(domain or ""))
        if address.domain not in self.domains:
            raise errors.ValidationError(
                f"{address.domain} is not one of our domains; choose one of: "
                f"{', '.join(self.domains)}.", field="domain")
        return address

    # --- customers ----------------------------------------------------------------

    @deferred
    async def add_customer(self, login, password, actor):
        login = normalize_username(login)
        check_password(password)
        password_hash = await self.hasher.hash(password)
        customer = await self.accounts.add_customer(login, password_hash, self.clock.seconds())
        await self.audit.add_audit(self.clock.seconds(), actor, "customer.add", login)
        return customer

    @deferred
    async def remove_customer(self, login, actor):
        login = normalize_username(login)
        removed = await self.accounts.remove_customer(login)
        for mailbox in removed:
            await self._forget_mailbox(mailbox, actor, f"with customer {login}")
        await self.audit.add_audit(self.clock.seconds(), actor, "customer.remove", login,
                                   f"{len(removed)} mailboxes")
        return removed

    @deferred
    async def set_customer_password(self, login, password, actor):
        login = normalize_username(login)
        check_password(password)
        await self.accounts.set_customer_password(login, await self.hasher.hash(password))
        await self.audit.add_audit(self.clock.seconds(), actor, "customer.password", login)

    def list_customers(self):
        return self.accounts.list_customers()

    def get_customer(self, login):
        return self.accounts.get_customer(login.strip().lower())

    # --- mailboxes ----------------------------------------------------------------

    @deferred
    async def add_mailbox(self, customer_login, username, address, password, actor):
        """Create a mailbox; ``address`` is ``local@domain`` text or an Address."""
        customer = await self.accounts.get_customer(customer_login.strip().lower())
        username = normalize_username(username)
        if not isinstance(address, Address):
            address = self.parse_address(address)
        elif address.domain not in self.domains:
            address = self.parse_address(str(address))
        check_password(password)
        password_hash = await self.hasher.hash(password)
        mailbox = await self.accounts.add_mailbox(
            customer.id, username, address, password_hash, self.limits.mailbox_quota_bytes,
            self.clock.seconds(), self.limits.mailboxes_per_customer)
        try:
            await self.mail.create_mailbox(mailbox.id)
        except BaseException:
            await self.accounts.remove_mailbox(mailbox.id)
            raise
        await self.audit.add_audit(self.clock.seconds(), actor, "mailbox.add", username,
                                   str(address))
        log.info("mailbox {username} <{address}> created by {actor}", username=username,
                 address=str(address), actor=actor)
        return mailbox

    @deferred
    async def remove_mailbox(self, username, actor, reason=""):
        """Delete the mailbox, its address and every message in it."""
        mailbox = await self.accounts.get_mailbox_by_username(normalize_username(username))
        await self.accounts.remove_mailbox(mailbox.id)
        await self._forget_mailbox(mailbox, actor, reason)
        return mailbox

    @deferred
    async def remove_inactive_mailbox(self, username, inactive_since, actor, reason=""):
        """Remove the mailbox only if nobody logged in after ``inactive_since``;
        -> the removed Mailbox, or None if it was used meanwhile."""
        mailbox = await self.accounts.get_mailbox_by_username(normalize_username(username))
        removed = await self.accounts.remove_mailbox(mailbox.id, inactive_since=inactive_since)
        if removed is not None:
            await self._forget_mailbox(removed, actor, reason)
        return removed

    @deferred
    async def record_inactivity_warning(self, mailbox, days_before):
        """Remember that the inactivity warning for each of ``days_before``
        (days before the deletion) has been sent for the current idle period."""
        for days in days_before:
            await self.accounts.record_warning(mailbox.id, days)

    async def _forget_mailbox(self, mailbox, actor, reason):
        await self.mail.remove_mailbox(mailbox.id)
        for hook in self.removal_hooks:
            try:
                await defer.maybeDeferred(hook, mailbox)
            except Exception:  # noqa: BLE001 - a failed clean-up must not undo the removal
                log.failure("clean-up after removing mailbox {username} failed",
                            username=mailbox.username)
        await self.audit.add_audit(self.clock.seconds(), actor, "mailbox.remove",
                                   mailbox.username, " ".join(
                                       p for p in (str(mailbox.address), reason) if p))
        log.info("mailbox {username} <{address}> removed by {actor} {reason}",
                 username=mailbox.username, address=str(mailbox.address), actor=actor,
                 reason=reason)

    @deferred
    async def set_mailbox_password(self, username, password, actor):
        mailbox = await self.accounts.get_mailbox_by_username(normalize_username(username))
        check_password(password)
        await self.accounts.set_mailbox_password(mailbox.id, await self.hasher.hash(password))
        await self.audit.add_audit(self.clock.seconds(), actor, "mailbox.password",
                                   mailbox.username)

    def list_mailboxes(self, customer_id=None):
        return self.accounts.list_mailboxes(customer_id)

    def get_mailbox(self, username):
        return self.accounts.get_mailbox_by_username(username.strip().lower())

    def find_mailbox_by_address(self, address):
        """-> Mailbox at ``address`` (an Address). NoSuchMailbox."""
        return self.accounts.get_mailbox_by_address(address)
