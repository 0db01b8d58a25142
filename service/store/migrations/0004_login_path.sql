-- The login path: one argon2id computation and one read per login.
--
-- password_salt: every password hash of a user uses this salt, so a login hashes the candidate
-- once and compares the digest with each stored one. Existing users take the salt of their newest
-- hash (so it needs no rehash); older hashes with other salts are verified the old way and
-- rehashed with this salt when they are next used.
ALTER TABLE users ADD COLUMN password_salt bytea;

UPDATE users u SET password_salt = coalesce(
    (SELECT decode(rpad(split_part(p.hash, '$', 5),
                        (length(split_part(p.hash, '$', 5)) + 3) / 4 * 4, '='), 'base64')
     FROM passwords p
     WHERE p.user_id = u.id AND p.hash LIKE '$argon2id$v=19$%$%$%'
     ORDER BY p.id DESC LIMIT 1),
    uuid_send(gen_random_uuid())
);

ALTER TABLE users ALTER COLUMN password_salt SET NOT NULL;

-- Failed logins are counted per name *and source*: source '' stands for every source that has
-- not logged in to the name before; a source that has (known_sources) keeps its own count, so
-- failures from strangers never delay the owner's known sources. Nothing is counted before a
-- hash proved an attempt wrong, so last_outcome (the pre-hash reservation's) goes.
ALTER TABLE login_throttle DROP COLUMN last_outcome;
ALTER TABLE login_throttle ADD COLUMN source text NOT NULL DEFAULT '';
ALTER TABLE login_throttle DROP CONSTRAINT login_throttle_pkey;
ALTER TABLE login_throttle ADD PRIMARY KEY (username_key, source);
ALTER TABLE login_throttle ALTER COLUMN source DROP DEFAULT;

-- Consecutive failed logins per source across every name (password spraying).
CREATE TABLE source_throttle (
    source          text PRIMARY KEY,
    failures        integer NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX source_throttle_by_updated ON source_throttle (updated_at);

-- Sources (client address, or mTLS identity) that have logged in to a user; refreshed coarsely.
CREATE TABLE known_sources (
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source        text NOT NULL,
    last_login_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, source)
);
CREATE INDEX known_sources_by_last_login ON known_sources (last_login_at);

-- A login reads all of a user's passwords; their order no longer matters.
DROP INDEX passwords_by_user_recent;
CREATE INDEX passwords_by_user ON passwords (user_id);

-- Retired passwords, when a password history is kept (AUTHSVC_PASSWORD_HISTORY > 0): a new
-- password may not be one of the newest few. Hashes use the user's salt, like the list's.
CREATE TABLE password_history (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hash       text NOT NULL,
    retired_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX password_history_by_user ON password_history (user_id, id DESC);
