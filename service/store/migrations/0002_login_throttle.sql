-- Brute-force defence: consecutive failed logins per normalised username (known or not).
-- A row exists only while a username has failures that no success has reset since; times are
-- the database's clock, so every replica agrees.

CREATE TABLE login_throttle (
    username_key    text PRIMARY KEY,
    -- Consecutive failures, each counted when its attempt is admitted (before any hashing);
    -- attempts made during a lock are not counted.
    failures        integer NOT NULL,
    -- No attempt is admitted before this.
    next_attempt_at timestamptz NOT NULL,
    -- Locked (only a right password is told so) until this.
    locked_until    timestamptz,
    -- What the latest attempt was: 'counted' (admitted, counted as a failure), 'locked'
    -- (admitted during a lock, not counted) or 'refused' (too early, not admitted).
    last_outcome    text NOT NULL CHECK (last_outcome IN ('counted', 'locked', 'refused')),
    -- When an attempt was last admitted.
    updated_at      timestamptz NOT NULL
);

-- The periodic purge of rows whose delay and lock have long passed finds them by age.
CREATE INDEX login_throttle_by_updated ON login_throttle (updated_at);
