-- What the spam filter's Bayes classifier has learned (the SQLite schema's
-- 003). scope 0 = global statistics; scope N = the mailbox with id N.
CREATE TABLE spam_totals (
    scope BIGINT PRIMARY KEY,
    nspam BIGINT NOT NULL DEFAULT 0,
    nham  BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE spam_tokens (
    scope BIGINT NOT NULL,
    token BIGINT NOT NULL,
    nspam BIGINT NOT NULL DEFAULT 0,
    nham  BIGINT NOT NULL DEFAULT 0,
    -- POSIX day the token was last counted: rare tokens not seen for long are pruned
    day   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, token)
);
CREATE INDEX spam_tokens_day ON spam_tokens (day);

CREATE TABLE spam_learned (
    scope       BIGINT NOT NULL,
    message_key TEXT NOT NULL,
    is_spam     BOOLEAN NOT NULL,
    day         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, message_key)
);
