"""ktmail: the mail service of a small broadband ISP, in one Twisted process.

Importing this package starts nothing; ``ktmail.tap`` is the composition root.
"""

__version__ = "0.1.0"
