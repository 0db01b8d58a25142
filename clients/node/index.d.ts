// Types for index.js (hand-written: the stubs are loaded at run time from the packed protos;
// tests/clients/test_node_client.py checks them with tsc against a program that uses them).
import * as grpc from "@grpc/grpc-js";

export { grpc };
export declare const credentials: typeof grpc.credentials;
/** The proto root (holds authsvc/v1/*.proto): the packed copy, else the repository's. */
export declare const PROTO_DIR: string;
/** google/api, google/rpc and google/protobuf protos, from google-proto-files. */
export declare const GOOGLE_PROTO_DIR: string;

export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

/**
 * A failed call: the gRPC status code, the ErrorInfo reason ("" if none), the message, the
 * RetryInfo delay and the request id.
 */
export declare class AuthsvcError extends Error {
  constructor(
    code: grpc.status,
    reason: string,
    message: string,
    options?: {
      domain?: string;
      metadata?: Record<string, string>;
      retryAfter?: number | null;
      requestId?: string | null;
      cause?: unknown;
    },
  );
  readonly name: "AuthsvcError";
  /** gRPC status code number (16 is UNAUTHENTICATED). */
  readonly code: grpc.status;
  /** gRPC status code name, e.g. "UNAUTHENTICATED". */
  readonly codeName: keyof typeof grpc.status | string;
  /** ErrorInfo.reason, e.g. "INVALID_CREDENTIALS"; "" when the error carried none. */
  readonly reason: string;
  /** ErrorInfo.domain ("authsvc"), or "". */
  readonly domain: string;
  readonly metadata: Record<string, string>;
  /** Seconds to wait before trying again (google.rpc.RetryInfo), or null when not given. */
  readonly retryAfter: number | null;
  /** The call's x-request-id (the server logs it), or null. */
  readonly requestId: string | null;
}

/**
 * Retries, off unless given. UNAVAILABLE is retried by gRPC's service-config retryPolicy
 * (exponential backoff); TOO_MANY_ATTEMPTS after the server's RetryInfo delay, when that is
 * at most `maxRetryAfter` seconds and fits in the call's deadline.
 */
export interface RetryOptions {
  /** Attempts in all, 2..5. Default 3. */
  maxAttempts?: number;
  /** Default 100. */
  initialBackoffMs?: number;
  /** Default 2000. */
  maxBackoffMs?: number;
  /** Default 2. */
  backoffMultiplier?: number;
  /** Wait out TOO_MANY_ATTEMPTS's RetryInfo delay and try again. Default true. */
  retryTooManyAttempts?: boolean;
  /** The longest RetryInfo delay worth waiting, in seconds. Default 10. */
  maxRetryAfter?: number;
}

/** Options every method takes last. */
export interface CallOptions {
  /** This call's deadline in milliseconds, retries included (default: the client's). */
  timeoutMs?: number;
}

export interface AuthClientOptions {
  /** Default: insecure (plaintext). Use this package's `credentials`, e.g. createSsl(ca). */
  credentials?: grpc.ChannelCredentials;
  /** Each call's default deadline in milliseconds. Default 10000. */
  timeoutMs?: number;
  /** Retries: `true` for the defaults, or RetryOptions. Default: none. */
  retry?: boolean | RetryOptions;
  channelOptions?: grpc.ClientOptions;
}

export interface ApiToken {
  apiToken: string;
  /** Expiry in milliseconds since the Unix epoch. */
  expires: number;
  /** 200 on success. */
  status: number;
}

export interface Introspection {
  active: boolean;
  sub?: string;
  username?: string;
  exp?: number;
  iat?: number;
  jti?: string;
  iss?: string;
  /** The user's groups, sorted (empty when it has none, and when inactive). */
  groups: string[];
  /** Space-separated scopes the token grants ("api"), when active. */
  scope?: string;
}

export interface Jwk {
  kty: string;
  kid: string;
  use: string;
  alg: string;
  crv?: string;
  x?: string;
  y?: string;
  n?: string;
  e?: string;
}

export declare class AuthClient {
  constructor(target: string, options?: AuthClientOptions);
  /** A signed JWT for the user, valid `ttl` seconds (1..86400, server default 300). */
  authorize(
    username: string,
    password: string,
    options?: CallOptions & { ttl?: number },
  ): Promise<string>;
  /** Densify's dialect: the credentials in the body; {apiToken, expires (epoch ms), status}. */
  issueApiToken(userName: string, pwd: string, options?: CallOptions): Promise<ApiToken>;
  /** Replace the user's whole password list with `newPassword`. */
  replacePasswords(
    username: string,
    password: string,
    newPassword: string,
    options?: CallOptions,
  ): Promise<void>;
  /** Add `newPassword` to the user's list. */
  addPassword(
    username: string,
    password: string,
    newPassword: string,
    options?: CallOptions,
  ): Promise<void>;
  /** Delete `oldPassword` from the user's list (never the last one). */
  deletePassword(
    username: string,
    password: string,
    oldPassword: string,
    options?: CallOptions,
  ): Promise<void>;
  /** RFC 7662 introspection: {active} and, when active, the claims. */
  verifyToken(token: string, options?: CallOptions): Promise<Introspection>;
  /** The public signing keys, an RFC 7517 JWK Set. */
  getJwks(options?: CallOptions): Promise<{ keys: Jwk[] }>;
  /** Close the channel; pending calls fail with CANCELLED. */
  close(): void;
}

/** `authorization: Basic base64(username:password)` metadata (UTF-8). */
export declare function basicMetadata(username: string, password: string): grpc.Metadata;
/** The ErrorInfo in a grpc-js error's `grpc-status-details-bin` trailer, or null. */
export declare function errorInfo(error: { metadata?: grpc.Metadata }): ErrorInfo | null;
/** The RetryInfo delay (seconds) in a grpc-js error's status details, or null. */
export declare function retryDelay(error: { metadata?: grpc.Metadata }): number | null;
/** The gRPC service config (an object; JSON.stringify it) retrying UNAVAILABLE. */
export declare function serviceConfig(options?: RetryOptions): object;
