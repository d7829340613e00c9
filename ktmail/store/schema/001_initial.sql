-- Customers (portal logins) and their mailboxes (mail logins).
CREATE TABLE customers (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    login         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created       REAL NOT NULL
);

CREATE TABLE mailboxes (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id   INTEGER NOT NULL REFERENCES customers(id),
    username      TEXT NOT NULL UNIQUE,
    local_part    TEXT NOT NULL,
    domain        TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    quota_bytes   INTEGER NOT NULL,
    created       REAL NOT NULL,
    last_login    REAL,
    -- inactivity warnings sent in the current idle period: "30,7"
    warnings_sent TEXT NOT NULL DEFAULT '',
    UNIQUE (local_part, domain)
);
CREATE INDEX mailboxes_customer ON mailboxes (customer_id);

-- Sliding-window counters: failed logins, sent recipients.
CREATE TABLE events (
    key   TEXT NOT NULL,
    at    REAL NOT NULL,
    count INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX events_key_at ON events (key, at);

CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     REAL NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
