"""The service layer: every rule of the product lives here, once.

Protocols, the web and the CLI call services; services call store
interfaces. Services never import twisted.mail, twisted.web or klein.
Public service methods return Deferreds (``@deferred`` turns an
``async def`` into one) so protocol code can chain them.
"""

import functools

from twisted.internet import defer


def deferred(fn):
    """Decorate an ``async def`` so that calling it returns a Deferred."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return defer.Deferred.fromCoroutine(fn(*args, **kwargs))
    return wrapper
