# The twistd plugin: `twistd ktmail --config F`. No __init__.py lives under
# twisted/ on purpose; Twisted finds this file through its plugin path.
from twisted.application.service import ServiceMaker

ktmail = ServiceMaker("ktmail", "ktmail.tap", "ktmail mail service (SMTP, IMAP, POP3, web)", "ktmail")
