-- Key rotation: a key signs from activates_at, and is published until retires_at (set when a
-- newer key replaces it, far enough ahead that every token it signed has expired by then).
-- encrypted: the private key is a passphrase-encrypted PKCS#8 PEM (AUTHSVC_KEY_ENCRYPTION_KEY).

ALTER TABLE signing_keys
    ADD COLUMN activates_at timestamptz,
    ADD COLUMN retires_at   timestamptz,
    ADD COLUMN encrypted    boolean NOT NULL DEFAULT false;

UPDATE signing_keys SET activates_at = created_at;

ALTER TABLE signing_keys ALTER COLUMN activates_at SET NOT NULL;
ALTER TABLE signing_keys ALTER COLUMN activates_at SET DEFAULT now();

DROP INDEX signing_keys_by_algorithm_newest;
CREATE INDEX signing_keys_by_algorithm_active ON signing_keys (algorithm, activates_at DESC);
