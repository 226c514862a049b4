/**
 * Image files <-> uint8 HWC pixels, with sharp (libvips, prebuilt binaries from npm; no install script).
 *
 * Conventions follow Keras's `image_dataset_from_directory`: alpha is dropped, `grayscale` is 1 channel and `rgb` 3,
 * and `--image-size` resizes with bilinear interpolation, stretching by default (`fit: 'stretch'`), or keeps the
 * aspect ratio by cropping the centre (`crop`, Keras's crop_to_aspect_ratio) or padding with black (`pad`, Keras's
 * pad_to_aspect_ratio).
 */
import { readFile } from 'node:fs/promises';
import sharp, { type Metadata, type OutputInfo } from 'sharp';
import { DataCorruptError, DataNotFoundError } from '../errors.js';
import type { ImageFit } from './image-options.js';
import { formatShape, sampleBytes, type SampleShape } from './dataset.js';

/** File extensions read as images (lower case). */
export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp'] as const;

export { COLOR_MODES, IMAGE_FITS, parseImageSize, type ColorMode, type ImageFit } from './image-options.js';

const SHARP_FIT = { stretch: 'fill', crop: 'cover', pad: 'contain' } as const;

/** What an image file holds, from its header. */
export interface ImageInfo {
  height: number;
  width: number;
  /** 1 for grayscale, 3 for colour (alpha not counted). */
  channels: 1 | 3;
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** The file's bytes; DataNotFoundError when missing, DataCorruptError when unreadable. */
export async function readImageBytes(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    if (isMissing(err)) throw new DataNotFoundError(file, { cause: err });
    throw new DataCorruptError(file, `cannot read: ${(err as Error).message}`, { cause: err });
  }
}

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Size and channel count of an image, from its header; DataCorruptError naming the file when it is no image. */
export async function probeImage(file: string, bytes: Uint8Array): Promise<ImageInfo> {
  let meta: Metadata;
  try {
    meta = await sharp(bytes).metadata();
  } catch (err) {
    throw new DataCorruptError(file, `not a readable image: ${reason(err)}`, { cause: err });
  }
  if (!meta.width || !meta.height || !meta.channels) {
    throw new DataCorruptError(file, 'not a readable image: no size or channel count in its header');
  }
  const colour = meta.channels - (meta.hasAlpha ? 1 : 0);
  return { height: meta.height, width: meta.width, channels: colour >= 3 ? 3 : 1 };
}

/** Decode to exactly `shape` (converting channels, resizing with `fit` when the size differs). */
export async function decodeToShape(
  file: string,
  bytes: Uint8Array,
  shape: SampleShape,
  fit: ImageFit = 'stretch',
): Promise<Uint8Array> {
  const [height, width, channels] = shape;
  let raw: { data: Buffer; info: OutputInfo };
  try {
    let img = sharp(bytes).removeAlpha();
    img = channels === 1 ? img.greyscale() : img.toColourspace('srgb');
    img = img.resize(width, height, { fit: SHARP_FIT[fit], kernel: 'linear', background: { r: 0, g: 0, b: 0 } });
    raw = await img.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw new DataCorruptError(file, `cannot decode image: ${reason(err)}`, { cause: err });
  }
  const got: SampleShape = [raw.info.height, raw.info.width, raw.info.channels];
  if (raw.data.length !== sampleBytes(shape) || got.some((v, i) => v !== shape[i])) {
    throw new DataCorruptError(file, `decoded to ${formatShape(got)}, expected ${formatShape(shape)}`);
  }
  return new Uint8Array(raw.data.buffer, raw.data.byteOffset, raw.data.length);
}

export interface DecodeOptions {
  /** Decode to this [height, width, channels] (what a model expects); default: the file's own size and channels. */
  shape?: SampleShape;
  fit?: ImageFit;
}

/**
 * Decode one image file into uint8 HWC pixels (`ringtrain predict`, the class-folder loader). Throws
 * DataNotFoundError for a missing file and DataCorruptError (naming it) for one that is not a readable image.
 */
export async function decodeImageFile(
  file: string,
  options: DecodeOptions = {},
): Promise<{ pixels: Uint8Array; shape: SampleShape }> {
  const bytes = await readImageBytes(file);
  let shape = options.shape;
  if (!shape) {
    const info = await probeImage(file, bytes);
    shape = [info.height, info.width, info.channels];
  }
  return { pixels: await decodeToShape(file, bytes, shape, options.fit), shape };
}

/** Encode uint8 HWC pixels (1 or 3 channels) as PNG or JPEG (tests, fixtures). */
export async function encodeImage(
  pixels: Uint8Array,
  shape: SampleShape,
  format: 'png' | 'jpeg' = 'png',
): Promise<Buffer> {
  const [height, width, channels] = shape;
  if (channels !== 1 && channels !== 3) throw new RangeError(`can encode 1 or 3 channels, got ${channels}`);
  // Without the explicit colour space sharp writes a 1-channel input as an RGB file.
  const img = sharp(pixels, { raw: { width, height, channels } }).toColourspace(channels === 1 ? 'b-w' : 'srgb');
  return format === 'png' ? img.png().toBuffer() : img.jpeg({ quality: 95 }).toBuffer();
}
