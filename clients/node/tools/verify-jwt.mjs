// Verifies a token against a JWK Set with jose and with jsonwebtoken, each at its defaults (no
// algorithm list: each library decides from the key what it accepts). Used by
// tests/interop/test_verifiers.py; not part of the package.
//   node tools/verify-jwt.mjs TOKEN JWKS_FILE ISSUER AUDIENCE
// Prints one JSON object: {"jose": "ok" | "<error>", "jsonwebtoken": "ok" | "<error>"}.

import { createPublicKey } from "node:crypto";
import { readFileSync } from "node:fs";

import { createLocalJWKSet, jwtVerify } from "jose";
import jsonwebtoken from "jsonwebtoken";

const [token, jwksFile, issuer, audience] = process.argv.slice(2);
const jwks = JSON.parse(readFileSync(jwksFile, "utf8"));
const results = {};

async function attempt(name, verify) {
  try {
    const claims = await verify();
    results[name] = typeof claims?.sub === "string" ? "ok" : `no sub in ${JSON.stringify(claims)}`;
  } catch (error) {
    results[name] = `${error.name}: ${error.message}`;
  }
}

await attempt("jose", async () => {
  const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), { issuer, audience });
  return payload;
});

await attempt("jsonwebtoken", () => {
  // jsonwebtoken takes one key, not a key set: pick it by the token's kid, as its docs show.
  const { kid } = JSON.parse(Buffer.from(token.split(".")[0], "base64url").toString("utf8"));
  const jwk = jwks.keys.find((key) => key.kid === kid);
  if (!jwk) throw new Error(`no key ${kid} in the JWKS`);
  const key = createPublicKey({ key: jwk, format: "jwk" });
  return jsonwebtoken.verify(token, key, { issuer, audience });
});

console.log(JSON.stringify(results));
