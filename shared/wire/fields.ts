/** Typed field access for validating decoded msgpack maps (control messages and chunk headers). */
import { ProtocolError, ProtocolVersionError } from '../errors.js';
import { describe, isPlainObject, type Fields } from './describe.js';
import { PROTOCOL_VERSION } from './framing.js';

/** Typed, own-property-only access to a decoded map, with error messages naming the field path. */
export class FieldReader {
  private constructor(
    private readonly fields: Fields,
    private readonly path: string,
  ) {}

  static of(value: unknown, path: string): FieldReader {
    if (!isPlainObject(value)) throw new ProtocolError(`${path}: expected a map, got ${describe(value)}`);
    return new FieldReader(value, path);
  }

  private raw(key: string): unknown {
    return Object.hasOwn(this.fields, key) ? this.fields[key] : undefined;
  }

  private fail(key: string, expected: string, value: unknown): never {
    throw new ProtocolError(`${this.path}.${key}: expected ${expected}, got ${describe(value)}`);
  }

  /** An integer in [min, max]. */
  int(key: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
    const value = this.raw(key);
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
      this.fail(key, `an integer in [${min}, ${max}]`, value);
    }
    return value;
  }

  /** A membership generation: a positive integer. */
  gen(key = 'gen'): number {
    return this.int(key, 1);
  }

  /** A protocol version field; any integer other than PROTOCOL_VERSION is a version mismatch. */
  version(key = 'protocolVersion'): number {
    const value = this.int(key, 0);
    if (value !== PROTOCOL_VERSION) throw new ProtocolVersionError(PROTOCOL_VERSION, value);
    return value;
  }

  /** Any number, NaN and infinities included. */
  number(key: string): number {
    const value = this.raw(key);
    if (typeof value !== 'number') this.fail(key, 'a number', value);
    return value;
  }

  /** A finite number >= 0 (durations). */
  duration(key: string): number {
    const value = this.raw(key);
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0)
      this.fail(key, 'a finite number >= 0', value);
    return value;
  }

  string(key: string): string {
    const value = this.raw(key);
    if (typeof value !== 'string') this.fail(key, 'a string', value);
    return value;
  }

  optionalInt(key: string): number | undefined {
    return this.raw(key) === undefined ? undefined : this.int(key);
  }

  optionalString(key: string): string | undefined {
    return this.raw(key) === undefined ? undefined : this.string(key);
  }

  optionalBoolean(key: string): boolean | undefined {
    return this.raw(key) === undefined ? undefined : this.boolean(key);
  }

  boolean(key: string): boolean {
    const value = this.raw(key);
    if (typeof value !== 'boolean') this.fail(key, 'a boolean', value);
    return value;
  }

  bytes(key: string, multipleOf = 1): Uint8Array {
    const value = this.raw(key);
    if (!(value instanceof Uint8Array) || value.byteLength % multipleOf !== 0) {
      this.fail(key, multipleOf === 1 ? 'bytes' : `bytes (a multiple of ${multipleOf})`, value);
    }
    return value;
  }

  optionalBytes(key: string): Uint8Array | undefined {
    return this.raw(key) === undefined ? undefined : this.bytes(key);
  }

  /** A plain object whose contents are left to its user. */
  record(key: string): Record<string, unknown> {
    const value = this.raw(key);
    if (!isPlainObject(value)) this.fail(key, 'a map', value);
    return value;
  }

  nested(key: string): FieldReader {
    return FieldReader.of(this.raw(key), `${this.path}.${key}`);
  }

  /** An array of at most `max` strings. */
  strings(key: string, max: number): string[] {
    const value = this.raw(key);
    if (!Array.isArray(value) || value.length > max || !value.every((v) => typeof v === 'string')) {
      this.fail(key, `an array of at most ${max} strings`, value);
    }
    return value as string[];
  }

  array<T>(key: string, item: (reader: FieldReader) => T): T[] {
    const value = this.raw(key);
    if (!Array.isArray(value)) this.fail(key, 'an array', value);
    return value.map((element, i) => item(FieldReader.of(element, `${this.path}.${key}[${i}]`)));
  }
}

export function requireBelow(path: string, value: number, bound: number, boundName: string): void {
  if (value >= bound) throw new ProtocolError(`${path}: ${value} must be below ${boundName} ${bound}`);
}
