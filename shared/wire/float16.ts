/**
 * IEEE 754 binary16 (half precision) conversions for `--compression fp16`, the wire encoding Horovod's
 * `hvd.Compression.fp16` uses: gradients travel as 16-bit values and are widened to float32 before any arithmetic.
 *
 * Narrowing rounds to nearest, ties to even; overflow gives an infinity, values below half the smallest subnormal
 * give a signed zero, NaN stays NaN (its payload kept where it fits). Widening is exact and goes through a 64K-entry
 * table of float32 bit patterns, so NaN payloads survive a round trip (nothing passes through a JS number).
 */

/** float32 bits of every float16 value, indexed by the float16 bits. */
export const FLOAT16_TO_FLOAT32_BITS = new Uint32Array(65536);
/** The same table read as float32 values (for arithmetic). */
export const FLOAT16_TO_FLOAT32 = new Float32Array(FLOAT16_TO_FLOAT32_BITS.buffer);

function widenBits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exponent = (h >>> 10) & 0x1f;
  let mantissa = h & 0x3ff;
  if (exponent === 0x1f) return sign | 0x7f800000 | (mantissa << 13);
  if (exponent !== 0) return sign | ((exponent + 112) << 23) | (mantissa << 13);
  if (mantissa === 0) return sign;
  // Subnormal: shift the mantissa up until its leading 1 is the implicit bit.
  let e = 113;
  while ((mantissa & 0x400) === 0) {
    mantissa <<= 1;
    e--;
  }
  return sign | (e << 23) | ((mantissa & 0x3ff) << 13);
}

for (let h = 0; h < 65536; h++) FLOAT16_TO_FLOAT32_BITS[h] = widenBits(h);

/** The float16 bits nearest to the float32 with bits `x` (round to nearest, ties to even). */
export function float32BitsToFloat16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  const mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa === 0 ? 0 : mantissa >>> 13 || 0x200);
  const e = exponent - 112;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const full = mantissa | 0x800000;
    const shift = 14 - e;
    const half = full >>> shift;
    const rest = full & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    return sign | (rest > halfway || (rest === halfway && (half & 1) === 1) ? half + 1 : half);
  }
  const half = sign | (e << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to infinity).
  return rest > 0x1000 || (rest === 0x1000 && (half & 1) === 1) ? half + 1 : half;
}

/** Narrow `source` into `target` (same length). */
export function encodeFloat16(source: Float32Array, target: Uint16Array): void {
  if (target.length !== source.length)
    throw new RangeError(`float16 target holds ${target.length} values, source ${source.length}`);
  const bits = new Uint32Array(source.buffer, source.byteOffset, source.length);
  for (let i = 0; i < bits.length; i++) target[i] = float32BitsToFloat16(bits[i]!);
}

/** Widen `source` into `target` (same length), exactly. */
export function decodeFloat16(source: Uint16Array, target: Float32Array): void {
  if (target.length !== source.length)
    throw new RangeError(`float32 target holds ${target.length} values, source ${source.length}`);
  const bits = new Uint32Array(target.buffer, target.byteOffset, target.length);
  for (let i = 0; i < source.length; i++) bits[i] = FLOAT16_TO_FLOAT32_BITS[source[i]!]!;
}
