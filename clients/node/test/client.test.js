// The Node.js client against a live server: AUTHSVC_TARGET, and a fresh user AUTHSVC_TEST_USER
// whose only password is AUTHSVC_TEST_PASSWORD; AUTHSVC_DELAYED_TARGET, a server whose
// failed-login delay is 0.4 s, with fresh users AUTHSVC_DELAYED_USERS (comma-separated) whose
// password is the same (tests/clients/test_node_client.py sets them all).
// The tests run in order and each leaves the user with that single password.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { AuthClient, AuthsvcError } from "../index.js";

const target = process.env.AUTHSVC_TARGET;
const user = process.env.AUTHSVC_TEST_USER;
const password = process.env.AUTHSVC_TEST_PASSWORD;
const delayedTarget = process.env.AUTHSVC_DELAYED_TARGET;
const delayedUsers = (process.env.AUTHSVC_DELAYED_USERS ?? "").split(",");

function jwtPart(token, index) {
  return JSON.parse(Buffer.from(token.split(".")[index], "base64url").toString("utf8"));
}

async function rejectsWith(promise, codeName, reason) {
  const error = await promise.then(
    () => assert.fail(`expected ${reason}, the call succeeded`),
    (caught) => caught,
  );
  assert.ok(error instanceof AuthsvcError, `not an AuthsvcError: ${error}`);
  assert.ok(error instanceof Error);
  assert.equal(error.codeName, codeName);
  assert.equal(error.reason, reason);
  assert.equal(error.domain, "authsvc");
  assert.equal(typeof error.code, "number");
  assert.ok(error.message.length > 0);
  return error;
}

describe("AuthClient", { timeout: 60_000 }, () => {
  let client;

  before(() => {
    assert.ok(target && user && password, "set AUTHSVC_TARGET, AUTHSVC_TEST_USER, AUTHSVC_TEST_PASSWORD");
    client = new AuthClient(target, { timeoutMs: 20_000 });
  });

  after(() => client?.close());

  test("authorize returns a JWT for the right password, valid ttl seconds", async () => {
    const token = await client.authorize(user, password, { ttl: 120 });
    const header = jwtPart(token, 0);
    const claims = jwtPart(token, 1);
    assert.equal(typeof header.kid, "string");
    assert.equal(claims.username, user);
    assert.equal(typeof claims.sub, "string");
    assert.ok(claims.sub.length > 0);
    assert.equal(claims.exp - claims.iat, 120);
    const verified = await client.verifyToken(token);
    assert.equal(verified.sub, claims.sub);
  });

  test("authorize without ttl gets the server default of 300 seconds", async () => {
    const claims = jwtPart(await client.authorize(user, password), 1);
    assert.equal(claims.exp - claims.iat, 300);
  });

  test("a wrong password is UNAUTHENTICATED with reason INVALID_CREDENTIALS", async () => {
    const error = await rejectsWith(
      client.authorize(user, `${password}-wrong`),
      "UNAUTHENTICATED",
      "INVALID_CREDENTIALS",
    );
    assert.equal(error.code, 16);
  });

  test("a refusal carries its request id, different per call, and no retryAfter", async () => {
    const first = await rejectsWith(
      client.authorize(user, `${password}-wrong`),
      "UNAUTHENTICATED",
      "INVALID_CREDENTIALS",
    );
    const second = await rejectsWith(
      client.authorize(user, `${password}-wrong`),
      "UNAUTHENTICATED",
      "INVALID_CREDENTIALS",
    );
    assert.equal(first.retryAfter, null);
    assert.match(first.requestId, /^[0-9a-f]{32}$/);
    assert.notEqual(first.requestId, second.requestId);
  });

  test("a call's own timeoutMs bounds it: DEADLINE_EXCEEDED, then the default works", async () => {
    // A deadline of now: the call cannot start (one of a millisecond can race the server).
    const error = await client.authorize(user, password, { timeoutMs: 0 }).then(
      () => assert.fail("a call with no time left succeeded"),
      (caught) => caught,
    );
    assert.ok(error instanceof AuthsvcError);
    assert.equal(error.codeName, "DEADLINE_EXCEEDED");
    assert.equal(error.reason, "");
    assert.ok(await client.authorize(user, password));
  });

  test("issueApiToken answers Densify's apiToken, expires (epoch ms) and status", async () => {
    const before = Date.now();
    const reply = await client.issueApiToken(user, password);
    assert.equal(reply.status, 200);
    assert.equal(typeof reply.expires, "number");
    const claims = jwtPart(reply.apiToken, 1);
    assert.equal(claims.username, user);
    assert.equal(reply.expires, claims.exp * 1000);
    assert.ok(reply.expires > before);
  });

  test("addPassword and deletePassword, with non-ASCII passwords in UTF-8", async () => {
    const second = "zweites Passwört ✓";
    await client.addPassword(user, password, second);
    assert.ok(await client.authorize(user, second));
    assert.ok(await client.authorize(user, password));
    await client.deletePassword(user, password, second);
    await rejectsWith(client.authorize(user, second), "UNAUTHENTICATED", "INVALID_CREDENTIALS");
    assert.ok(await client.authorize(user, password));
  });

  test("deleting the last password is CANNOT_DELETE_LAST_PASSWORD", async () => {
    const error = await rejectsWith(
      client.deletePassword(user, password, password),
      "FAILED_PRECONDITION",
      "CANNOT_DELETE_LAST_PASSWORD",
    );
    assert.equal(error.code, 9);
    assert.ok(await client.authorize(user, password));
  });

  test("verifyToken: active with the claims for a fresh token, inactive otherwise", async () => {
    const token = await client.authorize(user, password, { ttl: 60 });
    const claims = jwtPart(token, 1);
    const verified = await client.verifyToken(token);
    assert.equal(verified.active, true);
    assert.equal(verified.username, user);
    assert.equal(verified.sub, claims.sub);
    assert.equal(verified.jti, claims.jti);
    assert.equal(verified.iss, claims.iss);
    assert.equal(verified.exp, claims.exp);
    assert.equal(verified.iat, claims.iat);

    // proto3 has no presence for a repeated field: an inactive answer carries an empty list.
    assert.deepEqual(await client.verifyToken("not.a.token"), { active: false, groups: [] });
    const [head, body, signature] = token.split(".");
    const tampered = `${head}.${body}.${signature.startsWith("A") ? "B" : "A"}${signature.slice(1)}`;
    assert.equal((await client.verifyToken(tampered)).active, false);
  });

  test("replacePasswords revokes earlier tokens", async () => {
    const token = await client.authorize(user, password);
    const interim = `${password} (interim)`;
    await client.replacePasswords(user, password, interim);
    assert.equal((await client.verifyToken(token)).active, false);
    await rejectsWith(client.authorize(user, password), "UNAUTHENTICATED", "INVALID_CREDENTIALS");
    await client.replacePasswords(user, interim, password);
    assert.equal((await client.verifyToken(await client.authorize(user, password))).active, true);
  });

  test("getJwks publishes the key named by the token's kid", async () => {
    const token = await client.authorize(user, password);
    const header = jwtPart(token, 0);
    const { keys } = await client.getJwks();
    assert.ok(Array.isArray(keys) && keys.length > 0);
    const key = keys.find((candidate) => candidate.kid === header.kid);
    assert.ok(key, `no key with kid ${header.kid}`);
    assert.equal(key.alg, header.alg);
    assert.equal(key.use, "sig");
    assert.equal(typeof key.kty, "string");
  });
});

describe("retries", { timeout: 60_000 }, () => {
  test("TOO_MANY_ATTEMPTS carries retryAfter; without retries the call fails", async () => {
    const plain = new AuthClient(delayedTarget);
    try {
      await rejectsWith(plain.authorize(delayedUsers[0], "wrong"), "UNAUTHENTICATED", "INVALID_CREDENTIALS");
      const error = await rejectsWith(
        plain.authorize(delayedUsers[0], password),
        "RESOURCE_EXHAUSTED",
        "TOO_MANY_ATTEMPTS",
      );
      assert.ok(error.retryAfter > 0 && error.retryAfter <= 0.4, `retryAfter ${error.retryAfter}`);
    } finally {
      plain.close();
    }
  });

  test("with retry, a login within the delay waits it out and succeeds", async () => {
    const retrying = new AuthClient(delayedTarget, { retry: true });
    try {
      await rejectsWith(retrying.authorize(delayedUsers[1], "wrong"), "UNAUTHENTICATED", "INVALID_CREDENTIALS");
      const started = Date.now();
      const token = await retrying.authorize(delayedUsers[1], password);
      assert.equal(jwtPart(token, 1).username, delayedUsers[1]);
      assert.ok(Date.now() - started >= 200, "did not wait for the delay");
    } finally {
      retrying.close();
    }
  });

  test("retry.maxAttempts outside 2..5 is refused up front", () => {
    assert.throws(() => new AuthClient(delayedTarget, { retry: { maxAttempts: 9 } }), RangeError);
  });
});
