-- The audit trail: who logged in (when AUTHSVC_AUDIT_LOGINS is on), who failed and why, who
-- changed a password, an account or the signing keys. Append-only; rows older than
-- AUTHSVC_AUDIT_RETENTION_DAYS are purged in batches by the periodic task. Never holds a
-- password, a token or a hash (detail is written by the domain from facts, not from input).
CREATE TABLE audit_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    kind         text NOT NULL,
    -- As the caller or the administrator spelt it ('' when there is none, as for key events).
    username     text NOT NULL,
    -- NFKC + casefold of username: what `authsvc audit --user` matches.
    username_key text NOT NULL,
    -- Where the call came from (rpc/sources.py: 'ip:...', 'mtls:...', 'local'), or the
    -- command-line user ('cli:NAME'), or 'server' for the server's own chores.
    source       text NOT NULL,
    request_id   text NOT NULL,
    detail       text NOT NULL DEFAULT ''
);

-- Newest first, for a user or for everyone; the purge finds old rows by `at`.
CREATE INDEX audit_events_by_user ON audit_events (username_key, at DESC);
CREATE INDEX audit_events_by_time ON audit_events (at);
