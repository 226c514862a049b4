/**
 * The image options' values, apart from image.ts so that the option tables do not load sharp's native library in
 * every process (only a process that decodes images does).
 */
import { ConfigError } from '../errors.js';

export const COLOR_MODES = ['auto', 'grayscale', 'rgb'] as const;
export type ColorMode = (typeof COLOR_MODES)[number];
export const IMAGE_FITS = ['stretch', 'crop', 'pad'] as const;
export type ImageFit = (typeof IMAGE_FITS)[number];

/** `HxW` (or a single `N` for N x N) -> [height, width]; ConfigError naming the option otherwise. */
export function parseImageSize(value: string, name = '--image-size'): [number, number] {
  const m = /^(\d+)(?:x(\d+))?$/i.exec(value.trim());
  const size = m ? [Number(m[1]), Number(m[2] ?? m[1])] : [];
  if (size.length !== 2 || size.some((v) => !Number.isInteger(v) || v < 1 || v > 4096)) {
    throw new ConfigError(`${name} must be HxW with sides 1..4096 (e.g. 32x32), got '${value}'`);
  }
  return size as [number, number];
}
