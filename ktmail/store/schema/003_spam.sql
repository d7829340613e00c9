-- What the spam filter's Bayes classifier has learned (ktmail/services/spam).
-- scope 0 = global statistics; scope N = the mailbox with id N (dropped with
-- the mailbox by the removal hook). Tokens are 64-bit hashes, never words.
CREATE TABLE spam_totals (
    scope INTEGER PRIMARY KEY,
    nspam INTEGER NOT NULL DEFAULT 0,
    nham  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE spam_tokens (
    scope INTEGER NOT NULL,
    token INTEGER NOT NULL,
    nspam INTEGER NOT NULL DEFAULT 0,
    nham  INTEGER NOT NULL DEFAULT 0,
    -- POSIX day the token was last counted: rare tokens not seen for long are pruned
    day   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, token)
) WITHOUT ROWID;

-- Messages already learned, so that training twice counts once and moving a
-- message out of Spam turns its spam training into ham training.
CREATE TABLE spam_learned (
    scope       INTEGER NOT NULL,
    message_key TEXT NOT NULL,
    is_spam     INTEGER NOT NULL,
    day         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, message_key)
) WITHOUT ROWID;
