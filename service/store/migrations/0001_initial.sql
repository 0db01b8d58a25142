-- Users, their passwords, and the keys that sign their tokens.

CREATE TABLE users (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    username           text NOT NULL,
    -- NFKC + casefold of username: the identity used for lookups and uniqueness.
    username_key       text NOT NULL UNIQUE,
    created_at         timestamptz NOT NULL DEFAULT now(),
    locked             boolean NOT NULL DEFAULT false,
    expires_at         timestamptz,
    -- Bumped when the password list shrinks or is replaced: tokens carrying an older one are revoked.
    credential_version bigint NOT NULL DEFAULT 1
);

CREATE TABLE passwords (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hash         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);

-- A login reads a user's passwords most recently used first.
CREATE INDEX passwords_by_user_recent ON passwords (user_id, last_used_at DESC NULLS LAST, id DESC);

CREATE TABLE signing_keys (
    kid         text PRIMARY KEY,
    algorithm   text NOT NULL,
    private_pem bytea NOT NULL,
    public_jwk  jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX signing_keys_by_algorithm_newest ON signing_keys (algorithm, created_at DESC);
