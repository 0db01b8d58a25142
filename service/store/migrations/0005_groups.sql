-- Groups on users, carried in tokens (`groups`, RFC 9068 section 2.2.3.1) and deciding the
-- `api` scope (AUTHSVC_API_GROUPS). An array on the user row, sorted and distinct, so a login
-- still reads everything in its one statement.
ALTER TABLE users ADD COLUMN groups text[] NOT NULL DEFAULT '{}';
