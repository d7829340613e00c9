-- The folder indexes of the Maildirs (store/folder_index_pg.py), for nodes
-- that share the Maildirs on a network file system: the same tables as
-- the per-mailbox SQLite file of store/folder_index.py, keyed by mailbox.
-- Rows of one mailbox are changed only under its advisory lock.

-- One row per mailbox whose index lives here; a new generation after the
-- index was dropped (a removed mailbox) tells other nodes to forget caches.
CREATE TABLE mail_indexes (
    mailbox_id BIGINT PRIMARY KEY,
    generation BIGSERIAL NOT NULL
);

-- usage_bytes, usage_messages, last_uidvalidity, root_mtime_ns
CREATE TABLE mail_meta (
    mailbox_id BIGINT NOT NULL,
    name       TEXT NOT NULL,
    value      BIGINT,
    PRIMARY KEY (mailbox_id, name)
);

CREATE TABLE mail_folders (
    id            BIGSERIAL PRIMARY KEY,
    mailbox_id    BIGINT NOT NULL,
    name          TEXT NOT NULL,
    dirname       TEXT NOT NULL,
    uidvalidity   BIGINT NOT NULL,
    uidnext       BIGINT NOT NULL DEFAULT 1,
    highestmodseq BIGINT NOT NULL DEFAULT 1,
    new_mtime_ns  BIGINT,
    cur_mtime_ns  BIGINT,
    UNIQUE (mailbox_id, name),
    UNIQUE (mailbox_id, dirname)
);

CREATE TABLE mail_messages (
    folder_id     BIGINT NOT NULL REFERENCES mail_folders(id) ON DELETE CASCADE,
    uid           BIGINT NOT NULL,
    filename      TEXT NOT NULL,
    subdir        TEXT NOT NULL,
    sysflags      INTEGER NOT NULL DEFAULT 0,
    keywords      TEXT NOT NULL DEFAULT '',
    size          BIGINT NOT NULL,
    internal_date DOUBLE PRECISION NOT NULL,
    saved_at      DOUBLE PRECISION NOT NULL,
    modseq        BIGINT NOT NULL,
    recent        SMALLINT NOT NULL DEFAULT 0,
    PRIMARY KEY (folder_id, uid)
);
CREATE INDEX mail_messages_modseq ON mail_messages (folder_id, modseq);
CREATE INDEX mail_messages_filename ON mail_messages (folder_id, filename);

CREATE TABLE mail_message_mime (
    folder_id   BIGINT NOT NULL REFERENCES mail_folders(id) ON DELETE CASCADE,
    uid         BIGINT NOT NULL,
    hdr_from TEXT, hdr_to TEXT, hdr_cc TEXT, hdr_bcc TEXT, subject TEXT,
    sent_date DOUBLE PRECISION, message_id TEXT, in_reply_to TEXT, refs TEXT,
    structure   TEXT NOT NULL,
    PRIMARY KEY (folder_id, uid)
);

CREATE TABLE mail_vanished (
    folder_id BIGINT NOT NULL REFERENCES mail_folders(id) ON DELETE CASCADE,
    uid       BIGINT NOT NULL,
    modseq    BIGINT NOT NULL,
    PRIMARY KEY (folder_id, uid)
);
CREATE INDEX mail_vanished_modseq ON mail_vanished (folder_id, modseq);

CREATE TABLE mail_subscriptions (
    mailbox_id BIGINT NOT NULL,
    name       TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, name)
);
