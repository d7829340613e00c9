-- Customers (portal logins) and their mailboxes (mail logins), as in the
-- SQLite schema's 001; ids are BIGSERIAL, times POSIX seconds.
CREATE TABLE customers (
    id            BIGSERIAL PRIMARY KEY,
    login         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created       DOUBLE PRECISION NOT NULL
);

CREATE TABLE mailboxes (
    id            BIGSERIAL PRIMARY KEY,
    customer_id   BIGINT NOT NULL REFERENCES customers(id),
    username      TEXT NOT NULL UNIQUE,
    local_part    TEXT NOT NULL,
    domain        TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    quota_bytes   BIGINT NOT NULL,
    created       DOUBLE PRECISION NOT NULL,
    last_login    DOUBLE PRECISION,
    -- inactivity warnings sent in the current idle period: "30,7"
    warnings_sent TEXT NOT NULL DEFAULT '',
    UNIQUE (local_part, domain)
);
CREATE INDEX mailboxes_customer ON mailboxes (customer_id);

-- Sliding-window counters: failed logins, sent recipients (every node's).
CREATE TABLE events (
    key   TEXT NOT NULL,
    at    DOUBLE PRECISION NOT NULL,
    count INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX events_key_at ON events (key, at);
CREATE INDEX events_at ON events (at);

CREATE TABLE audit (
    id     BIGSERIAL PRIMARY KEY,
    at     DOUBLE PRECISION NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
