/** Shared pieces of the fuzz tests: run counts, typed outcomes, byte mutations and misaligned placement. */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ProtocolError, ProtocolVersionError, RingtrainError } from '../../shared/errors.js';

export const SCALE = Math.max(1, Number(process.env.RINGTRAIN_FUZZ_SCALE ?? 1));
export const runs = (n: number): { numRuns: number } => ({ numRuns: Math.round(n * SCALE) });

// ---------------------------------------------------------------------------------------------------------------
// Outcomes: a result, or one of the decoder's typed errors

export type ErrorClass = abstract new (...args: never[]) => RingtrainError;

/** Run `decode`; a typed error yields undefined, any other exception fails the property with a description. */
export function typedOutcome<T>(decode: () => T, allowed: readonly ErrorClass[]): T | undefined {
  try {
    return decode();
  } catch (err) {
    if (allowed.some((cls) => err instanceof cls)) {
      const typed = err as RingtrainError;
      assert.ok(typed.message.length > 0, 'a typed error explains itself');
      return undefined;
    }
    const e = err as Error;
    assert.fail(
      `expected ${allowed.map((c) => c.name).join(' or ')}, got ${e?.name ?? typeof err}: ${e?.message ?? String(err)}`,
    );
  }
}

export const PROTOCOL_ERRORS = [ProtocolError, ProtocolVersionError] as const;

// ---------------------------------------------------------------------------------------------------------------
// Byte-level mutations

export const INTERESTING_U32 = [
  0, 1, 2, 3, 4, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe,
  0xffffffff,
];

export type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'extend'; bytes: Uint8Array }
  | { kind: 'replace'; at: number; value: number }
  | { kind: 'word'; at: number; value: number; littleEndian: boolean }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'remove'; at: number; length: number };

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('extend' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
  fc.record({
    kind: fc.constant('replace' as const),
    at: fc.nat(),
    value: fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(0x00, 0x7f, 0x80, 0xc1, 0xff)),
  }),
  fc.record({
    kind: fc.constant('word' as const),
    at: fc.nat(),
    value: fc.oneof(fc.constantFrom(...INTERESTING_U32), fc.nat({ max: 0xffffffff })),
    littleEndian: fc.boolean(),
  }),
  fc.record({
    kind: fc.constant('insert' as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }),
  }),
  fc.record({ kind: fc.constant('remove' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 8 }) }),
);
export const mutationsArb = fc.array(mutationArb, { minLength: 1, maxLength: 4 });

export function mutate(input: Uint8Array, m: Mutation): Uint8Array {
  const at = (n: number, span = 0) => (input.length > span ? n % (input.length - span) : 0);
  const out = Uint8Array.from(input);
  switch (m.kind) {
    case 'flip':
      if (out.length > 0) out[at(m.at)] ^= 1 << m.bit;
      return out;
    case 'truncate':
      return out.subarray(0, m.at % (input.length + 1));
    case 'extend':
      return concat(out, m.bytes);
    case 'replace':
      if (out.length > 0) out[at(m.at)] = m.value;
      return out;
    case 'word': {
      if (out.length < 4) return out;
      new DataView(out.buffer).setUint32(at(m.at, 3), m.value >>> 0, m.littleEndian);
      return out;
    }
    case 'insert': {
      const i = m.at % (input.length + 1);
      return concat(out.subarray(0, i), m.bytes, out.subarray(i));
    }
    case 'remove': {
      const i = at(m.at);
      return concat(out.subarray(0, i), out.subarray(i + m.length));
    }
  }
}

export function applyMutations(input: Uint8Array, mutations: readonly Mutation[]): Uint8Array {
  return mutations.reduce<Uint8Array>((bytes, m) => mutate(bytes, m), input);
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/**
 * The bytes as a Buffer starting `shift` bytes into its ArrayBuffer, like a frame `ws` hands over: decoders must not
 * assume an aligned or zero offset.
 */
export function placed(bytes: Uint8Array, shift: number): Buffer {
  const backing = Buffer.alloc(bytes.length + shift + 3, 0xee);
  backing.set(bytes, shift);
  return backing.subarray(shift, shift + bytes.length);
}

export const shiftArb = fc.integer({ min: 0, max: 3 });
