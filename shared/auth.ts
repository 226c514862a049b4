/**
 * Cluster authentication by challenge-response: the side that accepts a link sends a fresh random nonce; the side
 * that dialed answers HMAC-SHA256(token, context | nonce). The token never crosses the wire, and an answer is bound to
 * one nonce (one connection) and one link type, so a recorded handshake cannot be replayed elsewhere.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { ConfigError } from './errors.js';

export type LinkContext = 'control' | 'ring';

export const NONCE_BYTES = 32;
export const TOKEN_ENV = 'RINGTRAIN_TOKEN';

export function newNonce(): Uint8Array {
  return randomBytes(NONCE_BYTES);
}

/** A random token for a new cluster (printed by `launch` and the coordinator when none is given). */
export function generateToken(): string {
  return randomBytes(24).toString('base64url');
}

export function authAnswer(token: string, context: LinkContext, nonce: Uint8Array): Uint8Array {
  return createHmac('sha256', token).update(`ringtrain/1/${context}|`).update(nonce).digest();
}

/** Constant-time check of an answer against the nonce this side sent. */
export function verifyAnswer(token: string, context: LinkContext, nonce: Uint8Array, answer: Uint8Array): boolean {
  const expected = authAnswer(token, context, nonce);
  return answer.byteLength === expected.byteLength && timingSafeEqual(answer, expected);
}

/** The token from an option or the environment; an empty one is a configuration error. */
export function resolveToken(option: unknown, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const token = typeof option === 'string' ? option : env[TOKEN_ENV];
  if (token === undefined) return undefined;
  if (token.length < 8)
    throw new ConfigError(`the cluster token must be at least 8 characters (--token or ${TOKEN_ENV})`);
  return token;
}
