// A thin Node.js client for authsvc over gRPC, the twin of clients/python/authsvc/client.py.
//
// The stubs are loaded at run time with @grpc/proto-loader from the package's own proto/ folder,
// which `npm pack` fills from the repository's proto/ (the one source of truth; the `prepack`
// script copies it, and a checkout without that copy reads ../../proto directly), with the
// google/api, google/rpc and google/protobuf files they need (from google-proto-files, which
// the checkout has as a dev dependency). Failures reject
// with AuthsvcError: `reason` (google.rpc.ErrorInfo), `retryAfter` (seconds, from
// google.rpc.RetryInfo) and `requestId` (the call's x-request-id).

import { randomUUID } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));

const packed = existsSync(path.join(here, "proto", "authsvc"));
/** The proto root (holds authsvc/v1/*.proto): the packed copy, else the repository's. */
export const PROTO_DIR = packed ? path.join(here, "proto") : path.resolve(here, "../../proto");
/** The google/api, google/rpc and google/protobuf protos: packed beside ours, else (in a
 * checkout) the google-proto-files dev dependency's. */
export const GOOGLE_PROTO_DIR = packed
  ? PROTO_DIR
  : path.dirname(require.resolve("google-proto-files/package.json"));

const DETAILS_KEY = "grpc-status-details-bin";
const REQUEST_ID_KEY = "x-request-id";
const ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo";
const RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo";
const SERVICES = ["authsvc.v1.AuthService", "authsvc.v1.PasswordService", "authsvc.v1.TokenService"];

const protoFiles = readdirSync(path.join(PROTO_DIR, "authsvc", "v1"))
  .filter((name) => name.endsWith(".proto"))
  .sort()
  .map((name) => `authsvc/v1/${name}`);

const packageDefinition = protoLoader.loadSync(protoFiles, {
  includeDirs: [PROTO_DIR, GOOGLE_PROTO_DIR],
  keepCase: true, // field names as in the protos (access_token, new_password, ...)
  longs: Number, // int64 epoch seconds / milliseconds fit a double exactly
  enums: String,
  defaults: true, // plain fields always present; proto3 `optional` ones only when set
  oneofs: false, // no synthetic `_sub`-style members for proto3 optional fields
});
const v1 = grpc.loadPackageDefinition(packageDefinition).authsvc.v1;

// google.rpc.Status and ErrorInfo, to read the `grpc-status-details-bin` trailer.
const rpcRoot = new protobuf.Root();
rpcRoot.resolvePath = (_origin, target) =>
  path.isAbsolute(target) ? target : path.join(GOOGLE_PROTO_DIR, target);
rpcRoot.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const Status = rpcRoot.lookupType("google.rpc.Status");
const ErrorInfo = rpcRoot.lookupType("google.rpc.ErrorInfo");
const RetryInfo = rpcRoot.lookupType("google.rpc.RetryInfo");

const codeNames = Object.fromEntries(
  Object.entries(grpc.status).map(([name, value]) => [value, name]),
);

/**
 * A failed call: the gRPC status code, the ErrorInfo reason ("" if none, e.g. a connection
 * failure), the message, `retryAfter` (seconds to wait, from RetryInfo; null when none) and
 * `requestId` (the call's x-request-id, which the server logs).
 */
export class AuthsvcError extends Error {
  constructor(
    code,
    reason,
    message,
    { domain = "", metadata = {}, retryAfter = null, requestId = null, cause } = {},
  ) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "AuthsvcError";
    /** gRPC status code number (grpc.status.UNAUTHENTICATED is 16). */
    this.code = code;
    /** gRPC status code name ("UNAUTHENTICATED"). */
    this.codeName = codeNames[code] ?? String(code);
    /** ErrorInfo.reason ("INVALID_CREDENTIALS"), or "" when the error carried no ErrorInfo. */
    this.reason = reason;
    /** ErrorInfo.domain ("authsvc"), or "". */
    this.domain = domain;
    /** ErrorInfo.metadata. */
    this.metadata = metadata;
    /** Seconds to wait before trying again (google.rpc.RetryInfo), or null. */
    this.retryAfter = retryAfter;
    /** The call's request id (x-request-id), or null. */
    this.requestId = requestId;
  }
}

/** The google.rpc.Status in a grpc-js error's `grpc-status-details-bin` trailer, or null. */
function richStatus(error) {
  for (const value of error.metadata?.get(DETAILS_KEY) ?? []) {
    try {
      return Status.decode(Buffer.isBuffer(value) ? value : Buffer.from(value, "latin1"));
    } catch {
      // not a Status: ignore it
    }
  }
  return null;
}

/** The first ErrorInfo in a grpc-js error's status details, or null. */
export function errorInfo(error) {
  for (const detail of richStatus(error)?.details ?? []) {
    if (detail.type_url === ERROR_INFO_TYPE) {
      return ErrorInfo.toObject(ErrorInfo.decode(detail.value), { defaults: true });
    }
  }
  return null;
}

/** The RetryInfo delay in a grpc-js error's status details, in seconds, or null. */
export function retryDelay(error) {
  for (const detail of richStatus(error)?.details ?? []) {
    if (detail.type_url === RETRY_INFO_TYPE) {
      const info = RetryInfo.toObject(RetryInfo.decode(detail.value), {
        defaults: true,
        longs: Number,
      });
      return (info.retry_delay?.seconds ?? 0) + (info.retry_delay?.nanos ?? 0) / 1e9;
    }
  }
  return null;
}

function toAuthsvcError(error, sentRequestId) {
  if (typeof error?.code !== "number" || !(error.metadata instanceof grpc.Metadata)) {
    return error;
  }
  const info = errorInfo(error);
  const echoed = error.metadata.get(REQUEST_ID_KEY)[0];
  return new AuthsvcError(error.code, info?.reason ?? "", error.details ?? error.message, {
    domain: info?.domain ?? "",
    metadata: info?.metadata ?? {},
    retryAfter: retryDelay(error),
    requestId: typeof echoed === "string" ? echoed : sentRequestId,
    cause: error,
  });
}

/**
 * The gRPC service config that retries UNAVAILABLE on every authsvc method (gRPC's own
 * retryPolicy: exponential backoff, jittered, within the call's deadline).
 */
export function serviceConfig({
  maxAttempts = 3,
  initialBackoffMs = 100,
  maxBackoffMs = 2000,
  backoffMultiplier = 2,
} = {}) {
  return {
    methodConfig: [
      {
        name: SERVICES.map((service) => ({ service })),
        retryPolicy: {
          maxAttempts,
          initialBackoff: `${(initialBackoffMs / 1000).toFixed(3)}s`,
          maxBackoff: `${(maxBackoffMs / 1000).toFixed(3)}s`,
          backoffMultiplier,
          retryableStatusCodes: ["UNAVAILABLE"],
        },
      },
    ],
  };
}

/** gRPC metadata carrying `authorization: Basic base64(username:password)` (UTF-8, RFC 7617). */
export function basicMetadata(username, password) {
  const metadata = new grpc.Metadata();
  const token = Buffer.from(`${username}:${password}`, "utf8").toString("base64");
  metadata.set("authorization", `Basic ${token}`);
  return metadata;
}

const RETRY_DEFAULTS = {
  maxAttempts: 3,
  initialBackoffMs: 100,
  maxBackoffMs: 2000,
  backoffMultiplier: 2,
  retryTooManyAttempts: true,
  maxRetryAfter: 10,
};

/**
 * Client on one channel, reused. Options: `credentials` (TLS; default plaintext), `timeoutMs`
 * (each call's default deadline, retries included; every method takes its own `timeoutMs`),
 * `retry` (off by default; `true` or an object, see README), `channelOptions`.
 */
export class AuthClient {
  constructor(target, { credentials, timeoutMs = 10_000, retry, channelOptions = {} } = {}) {
    const creds = credentials ?? grpc.credentials.createInsecure();
    this._retry = retry ? { ...RETRY_DEFAULTS, ...(retry === true ? {} : retry) } : null;
    if (this._retry && !(this._retry.maxAttempts >= 2 && this._retry.maxAttempts <= 5)) {
      throw new RangeError("retry.maxAttempts must be between 2 and 5");
    }
    const options = this._retry
      ? {
          ...channelOptions,
          "grpc.enable_retries": 1,
          "grpc.service_config": JSON.stringify(serviceConfig(this._retry)),
        }
      : channelOptions;
    this._auth = new v1.AuthService(target, creds, options);
    const shared = { channelOverride: this._auth.getChannel() };
    this._passwords = new v1.PasswordService(target, creds, shared);
    this._tokens = new v1.TokenService(target, creds, shared);
    this._timeoutMs = timeoutMs;
  }

  _attempt(client, method, request, metadata, deadline, requestId) {
    return new Promise((resolve, reject) => {
      client[method](request, metadata, { deadline: new Date(deadline) }, (error, reply) => {
        if (error) reject(toAuthsvcError(error, requestId));
        else resolve(reply);
      });
    });
  }

  // UNAVAILABLE is retried by gRPC (the service config above). TOO_MANY_ATTEMPTS is retried
  // here: gRPC's retryPolicy keys on status codes alone (it would retry any RESOURCE_EXHAUSTED)
  // and reads no google.rpc.RetryInfo, so the wait the server asks for is honoured by hand.
  async _call(client, method, request, metadata = new grpc.Metadata(), timeoutMs = undefined) {
    const deadline = Date.now() + (timeoutMs ?? this._timeoutMs);
    const requestId = randomUUID().replaceAll("-", "");
    metadata.set(REQUEST_ID_KEY, requestId);
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this._attempt(client, method, request, metadata, deadline, requestId);
      } catch (error) {
        const retry = this._retry;
        const wait = error instanceof AuthsvcError ? error.retryAfter : null;
        if (
          !retry?.retryTooManyAttempts ||
          error.reason !== "TOO_MANY_ATTEMPTS" ||
          wait == null ||
          attempt >= retry.maxAttempts ||
          wait > retry.maxRetryAfter ||
          Date.now() + wait * 1000 >= deadline
        ) {
          throw error;
        }
        await sleep(wait * 1000);
      }
    }
  }

  /** A signed JWT for the user, valid `ttl` seconds (server default 300). */
  async authorize(username, password, { ttl, timeoutMs } = {}) {
    const request = ttl == null ? {} : { ttl };
    const reply = await this._call(
      this._auth,
      "Authorize",
      request,
      basicMetadata(username, password),
      timeoutMs,
    );
    return reply.access_token;
  }

  /** Densify's dialect: {apiToken, expires (epoch ms), status (200)}. */
  async issueApiToken(userName, pwd, { timeoutMs } = {}) {
    const request = { user_name: userName, pwd };
    const reply = await this._call(this._auth, "IssueApiToken", request, undefined, timeoutMs);
    return { apiToken: reply.api_token, expires: reply.expires, status: reply.status };
  }

  /** Replace the caller's whole password list with `newPassword`. */
  async replacePasswords(username, password, newPassword, { timeoutMs } = {}) {
    await this._call(
      this._passwords,
      "ReplacePasswords",
      { new_password: newPassword },
      basicMetadata(username, password),
      timeoutMs,
    );
  }

  /** Add `newPassword` to the caller's list. */
  async addPassword(username, password, newPassword, { timeoutMs } = {}) {
    await this._call(
      this._passwords,
      "AddPassword",
      { new_password: newPassword },
      basicMetadata(username, password),
      timeoutMs,
    );
  }

  /** Delete `oldPassword` from the caller's list (never the last one). */
  async deletePassword(username, password, oldPassword, { timeoutMs } = {}) {
    await this._call(
      this._passwords,
      "DeletePassword",
      { old_password: oldPassword },
      basicMetadata(username, password),
      timeoutMs,
    );
  }

  /** RFC 7662 introspection: {active} and, when active, sub, username, exp, iat, jti, iss. */
  async verifyToken(token, { timeoutMs } = {}) {
    return this._call(this._tokens, "VerifyToken", { token }, undefined, timeoutMs);
  }

  /** The public signing keys as an RFC 7517 JWK Set: {keys: [{kty, kid, use, alg, ...}]}. */
  async getJwks({ timeoutMs } = {}) {
    return this._call(this._tokens, "GetJwks", {}, undefined, timeoutMs);
  }

  /** Close the channel; pending calls fail with CANCELLED. */
  close() {
    this._auth.close();
  }
}

export { grpc };
export const { credentials } = grpc;
