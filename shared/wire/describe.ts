/** Short descriptions of untrusted decoded values, for error messages that never echo a whole payload. */
export type Fields = Record<string, unknown>;

export function truncate(text: string, max = 120): string {
  return text.length > max ? `${text.slice(0, max)}...` : text;
}

export function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (typeof value === 'number') return Number.isNaN(value) ? 'NaN' : `number ${value}`;
  if (typeof value === 'string') return `string ${JSON.stringify(truncate(value, 40))}`;
  if (typeof value === 'bigint' || typeof value === 'boolean') return `${typeof value} ${String(value)}`;
  if (Array.isArray(value)) return `array of ${value.length}`;
  if (value instanceof Uint8Array) return `${value.byteLength} bytes`;
  if (isPlainObject(value)) return 'a map';
  try {
    // msgpackr turns extensions (and the reserved byte 0xc1) into class instances; name the class.
    const name: unknown = (Object.getPrototypeOf(value) as { constructor?: { name?: unknown } } | null)?.constructor
      ?.name;
    if (typeof name === 'string' && name !== '') return `a ${name}`;
  } catch {
    // an exotic object; fall through to the generic description
  }
  return Object.prototype.toString.call(value);
}

export function isPlainObject(value: unknown): value is Fields {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}
