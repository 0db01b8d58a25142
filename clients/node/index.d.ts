// Types for index.js (hand-written; the runtime stubs are loaded from ../../proto).
import * as grpc from "@grpc/grpc-js";

export { grpc };
export declare const credentials: typeof grpc.credentials;
/** The project's proto root (holds authsvc/v1/*.proto). */
export declare const PROTO_DIR: string;
/** google/api, google/rpc and google/protobuf protos, from google-proto-files. */
export declare const GOOGLE_PROTO_DIR: string;

export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

/** A failed call: the gRPC status code, the ErrorInfo reason ("" if none) and the message. */
export declare class AuthsvcError extends Error {
  constructor(
    code: grpc.status,
    reason: string,
    message: string,
    options?: { domain?: string; metadata?: Record<string, string>; cause?: unknown },
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
}

export interface AuthClientOptions {
  /** Default: insecure (plaintext). Use this package's `credentials`, e.g. createSsl(ca). */
  credentials?: grpc.ChannelCredentials;
  /** Each call's deadline in milliseconds. Default 10000. */
  timeoutMs?: number;
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
  /** A signed JWT for the user, valid `ttl` seconds (server default 300). */
  authorize(username: string, password: string, options?: { ttl?: number }): Promise<string>;
  issueApiToken(userName: string, pwd: string): Promise<ApiToken>;
  replacePasswords(username: string, password: string, newPassword: string): Promise<void>;
  addPassword(username: string, password: string, newPassword: string): Promise<void>;
  deletePassword(username: string, password: string, oldPassword: string): Promise<void>;
  verifyToken(token: string): Promise<Introspection>;
  getJwks(): Promise<{ keys: Jwk[] }>;
  close(): void;
}

/** `authorization: Basic base64(username:password)` metadata (UTF-8). */
export declare function basicMetadata(username: string, password: string): grpc.Metadata;
/** The ErrorInfo in a grpc-js error's `grpc-status-details-bin` trailer, or null. */
export declare function errorInfo(error: { metadata?: grpc.Metadata }): ErrorInfo | null;
