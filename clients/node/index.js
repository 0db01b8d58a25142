// A thin Node.js client for authsvc over gRPC, mirroring clients/python/authsvc/client.py.
//
// The stubs are loaded at run time from the project's protos (../../proto: the one source of
// truth, never copied); google/api, google/rpc and google/protobuf come from the npm package
// google-proto-files. Failures reject with AuthsvcError, whose `reason` is the ErrorInfo reason
// the server attaches to every error (e.g. "INVALID_CREDENTIALS").

import { readdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));

/** The project's proto root (holds authsvc/v1/*.proto). */
export const PROTO_DIR = path.resolve(here, "../../proto");
/** google/api, google/rpc and google/protobuf protos, from the google-proto-files package. */
export const GOOGLE_PROTO_DIR = path.dirname(require.resolve("google-proto-files/package.json"));

const DETAILS_KEY = "grpc-status-details-bin";
const ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo";

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

const codeNames = Object.fromEntries(
  Object.entries(grpc.status).map(([name, value]) => [value, name]),
);

/** A failed call: the gRPC status code, the ErrorInfo reason ("" if none) and the message. */
export class AuthsvcError extends Error {
  constructor(code, reason, message, { domain = "", metadata = {}, cause } = {}) {
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
  }
}

/** The first ErrorInfo in a grpc-js error's status details, or null. */
export function errorInfo(error) {
  for (const value of error.metadata?.get(DETAILS_KEY) ?? []) {
    let status;
    try {
      status = Status.decode(Buffer.isBuffer(value) ? value : Buffer.from(value, "latin1"));
    } catch {
      continue;
    }
    for (const detail of status.details ?? []) {
      if (detail.type_url === ERROR_INFO_TYPE) {
        return ErrorInfo.toObject(ErrorInfo.decode(detail.value), { defaults: true });
      }
    }
  }
  return null;
}

function toAuthsvcError(error) {
  if (typeof error?.code !== "number" || !(error.metadata instanceof grpc.Metadata)) {
    return error;
  }
  const info = errorInfo(error);
  return new AuthsvcError(error.code, info?.reason ?? "", error.details ?? error.message, {
    domain: info?.domain ?? "",
    metadata: info?.metadata ?? {},
    cause: error,
  });
}

/** gRPC metadata carrying `authorization: Basic base64(username:password)` (UTF-8, RFC 7617). */
export function basicMetadata(username, password) {
  const metadata = new grpc.Metadata();
  const token = Buffer.from(`${username}:${password}`, "utf8").toString("base64");
  metadata.set("authorization", `Basic ${token}`);
  return metadata;
}

/** Client on one channel, reused. `timeoutMs` is each call's deadline. */
export class AuthClient {
  constructor(target, { credentials, timeoutMs = 10_000, channelOptions = {} } = {}) {
    const creds = credentials ?? grpc.credentials.createInsecure();
    this._auth = new v1.AuthService(target, creds, channelOptions);
    const shared = { channelOverride: this._auth.getChannel() };
    this._passwords = new v1.PasswordService(target, creds, shared);
    this._tokens = new v1.TokenService(target, creds, shared);
    this._timeoutMs = timeoutMs;
  }

  _call(client, method, request, metadata = new grpc.Metadata()) {
    const deadline = new Date(Date.now() + this._timeoutMs);
    return new Promise((resolve, reject) => {
      client[method](request, metadata, { deadline }, (error, reply) => {
        if (error) reject(toAuthsvcError(error));
        else resolve(reply);
      });
    });
  }

  /** A signed JWT for the user, valid `ttl` seconds (server default 300). */
  async authorize(username, password, { ttl } = {}) {
    const request = ttl == null ? {} : { ttl };
    const reply = await this._call(
      this._auth,
      "Authorize",
      request,
      basicMetadata(username, password),
    );
    return reply.access_token;
  }

  /** Densify's dialect: {apiToken, expires (epoch ms), status (200)}. */
  async issueApiToken(userName, pwd) {
    const reply = await this._call(this._auth, "IssueApiToken", { user_name: userName, pwd });
    return { apiToken: reply.api_token, expires: reply.expires, status: reply.status };
  }

  /** Replace the caller's whole password list with `newPassword`. */
  async replacePasswords(username, password, newPassword) {
    await this._call(
      this._passwords,
      "ReplacePasswords",
      { new_password: newPassword },
      basicMetadata(username, password),
    );
  }

  /** Add `newPassword` to the caller's list. */
  async addPassword(username, password, newPassword) {
    await this._call(
      this._passwords,
      "AddPassword",
      { new_password: newPassword },
      basicMetadata(username, password),
    );
  }

  /** Delete `oldPassword` from the caller's list (never the last one). */
  async deletePassword(username, password, oldPassword) {
    await this._call(
      this._passwords,
      "DeletePassword",
      { old_password: oldPassword },
      basicMetadata(username, password),
    );
  }

  /** RFC 7662 introspection: {active} and, when active, sub, username, exp, iat, jti, iss. */
  async verifyToken(token) {
    return this._call(this._tokens, "VerifyToken", { token });
  }

  /** The public signing keys as an RFC 7517 JWK Set: {keys: [{kty, kid, use, alg, ...}]}. */
  async getJwks() {
    return this._call(this._tokens, "GetJwks", {});
  }

  /** Close the channel; pending calls fail with CANCELLED. */
  close() {
    this._auth.close();
  }
}

export { grpc };
export const { credentials } = grpc;
