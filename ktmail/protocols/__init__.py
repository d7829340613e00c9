"""Wire protocols: SMTP, IMAP4, POP3. They translate commands into service
calls and errors into replies, and nothing more."""
