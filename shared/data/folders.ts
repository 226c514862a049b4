/**
 * Class folders of images, the layout of Keras's `image_dataset_from_directory`:
 *
 *   DIR/train/<class>/*.png|jpg|jpeg|webp     (sub-folders of a class folder are searched too)
 *   DIR/test/<class>/...                      (optional; without it, validationSplit holds out a seeded fraction)
 *
 * `DIR/<class>/...` (no train/) is read as the training folder too. Class names are the sorted folder names, label i
 * is the i-th; test/ may lack a class but not have one train/ lacks. Every image is decoded to one shape: the given
 * image size (resized, see image.ts) or the first training image's, and the given colour mode or the first image's
 * channel count; an image of another size or channel count without those options is a DataMismatchError naming it.
 */
import { readdir, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { ConfigError, DataMismatchError, DataNotFoundError } from '../errors.js';
import { permutation } from '../rng.js';
import { makeSplit, sampleBytes, type DataSplit, type Dataset, type SampleShape } from './dataset.js';
import {
  decodeToShape,
  IMAGE_EXTENSIONS,
  probeImage,
  readImageBytes,
  type ColorMode,
  type ImageFit,
  type ImageInfo,
} from './image.js';

export interface FolderOptions {
  /** [height, width] every image is resized to; default: the first training image's size. */
  imageSize?: readonly [number, number];
  /** Default 'auto': the first training image's channel count. */
  colorMode?: ColorMode;
  fit?: ImageFit;
  /** Fraction of train/ held out as the test split when there is no test/ (0 = none). */
  validationSplit?: number;
  seed?: number;
}

interface LabelledFile {
  file: string;
  label: number;
}

/** Images decoded at once: enough to keep libvips' threads busy, few enough to bound memory. */
const DECODE_CONCURRENCY = 8;
const MAX_CLASSES = 256;

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

function isImageName(name: string): boolean {
  return (IMAGE_EXTENSIONS as readonly string[]).includes(extname(name).toLowerCase());
}

/** The non-hidden sub-folders of `root`, sorted (Keras's class order). */
export async function classFolders(root: string): Promise<string[]> {
  const entries = await readdir(root, { withFileTypes: true });
  return entries
    .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
    .map((e) => e.name)
    .sort();
}

/** The image files under one class folder, sorted by path. */
async function imagesIn(dir: string): Promise<string[]> {
  const names = await readdir(dir, { recursive: true });
  return names
    .filter((name) => isImageName(name) && !name.split(/[\\/]/).some((part) => part.startsWith('.')))
    .sort()
    .map((name) => join(dir, name));
}

async function listFiles(root: string, classNames: readonly string[]): Promise<LabelledFile[]> {
  const out: LabelledFile[] = [];
  for (const [label, name] of classNames.entries()) {
    for (const file of await imagesIn(join(root, name))) out.push({ file, label });
  }
  return out;
}

/** Does `dir` look like a class-folder dataset (train/ or class folders holding images)? */
export async function isFolderDataset(dir: string): Promise<boolean> {
  if (await isDirectory(join(dir, 'train'))) return true;
  if (!(await isDirectory(dir))) return false;
  for (const name of await classFolders(dir)) {
    if ((await imagesIn(join(dir, name))).length > 0) return true;
  }
  return false;
}

/** The shape every image is decoded to: the options where given, the first image's otherwise. */
function targetShape(first: ImageInfo, opts: FolderOptions): SampleShape {
  const [height, width] = opts.imageSize ?? [first.height, first.width];
  const mode = opts.colorMode ?? 'auto';
  const channels = mode === 'auto' ? first.channels : mode === 'grayscale' ? 1 : 3;
  return [height, width, channels];
}

/** Without --image-size / --color-mode, every image must match the first one. */
function checkLikeFirst(file: string, info: ImageInfo, shape: SampleShape, firstFile: string, o: FolderOptions): void {
  if (!o.imageSize && (info.height !== shape[0] || info.width !== shape[1])) {
    throw new DataMismatchError(
      file,
      `is ${info.height}x${info.width} but ${firstFile} is ${shape[0]}x${shape[1]}; ` +
        'pass --image-size HxW to resize every image',
    );
  }
  if ((o.colorMode ?? 'auto') === 'auto' && info.channels !== shape[2]) {
    throw new DataMismatchError(
      file,
      `has ${info.channels} channel(s) but ${firstFile} has ${shape[2]}; pass --color-mode grayscale or rgb`,
    );
  }
}

interface DecodeJob {
  files: LabelledFile[];
  shape: SampleShape;
  firstFile: string;
  opts: FolderOptions;
}

async function decodeInto(job: DecodeJob, images: Uint8Array, index: number): Promise<void> {
  const { file } = job.files[index];
  const bytes = await readImageBytes(file);
  checkLikeFirst(file, await probeImage(file, bytes), job.shape, job.firstFile, job.opts);
  const pixels = await decodeToShape(file, bytes, job.shape, job.opts.fit);
  images.set(pixels, index * sampleBytes(job.shape));
}

/** Decode every file into one split, DECODE_CONCURRENCY at a time; the first failure is thrown. */
async function decodeSplit(job: DecodeJob): Promise<DataSplit> {
  const images = new Uint8Array(job.files.length * sampleBytes(job.shape));
  const labels = Uint8Array.from(job.files, (f) => f.label);
  let next = 0;
  const worker = async () => {
    while (next < job.files.length) await decodeInto(job, images, next++);
  };
  await Promise.all(Array.from({ length: Math.min(DECODE_CONCURRENCY, job.files.length) }, worker));
  return makeSplit(images, labels, job.shape);
}

/** Keras's validation_split: shuffle with the seed, the last floor(F * n) samples are held out (order kept). */
export function holdOut(n: number, fraction: number, seed: number): { train: number[]; test: number[] } {
  const order = permutation(n, seed);
  const testCount = Math.floor(fraction * n);
  const byIndex = (a: number, b: number) => a - b;
  return {
    train: Array.from(order.subarray(0, n - testCount)).sort(byIndex),
    test: Array.from(order.subarray(n - testCount)).sort(byIndex),
  };
}

async function testFiles(dir: string, trainRoot: string, classNames: string[], o: FolderOptions) {
  const testRoot = join(dir, 'test');
  if (trainRoot !== dir && (await isDirectory(testRoot))) {
    if (o.validationSplit) {
      throw new ConfigError(`--validation-split: ${dir} has a test/ folder already; drop the option or the folder`);
    }
    for (const name of await classFolders(testRoot)) {
      if (!classNames.includes(name)) {
        throw new DataMismatchError(join(testRoot, name), `class '${name}' has no folder in ${trainRoot}`);
      }
    }
    return { test: await listFiles(testRoot, classNames) };
  }
  if (!o.validationSplit) {
    throw new ConfigError(`${dir} has no test/ folder: pass --validation-split F (e.g. 0.2) to hold out a fraction`);
  }
  return { test: undefined };
}

/** Load a class-folder dataset (see the module comment). */
export async function loadFolders(dir: string, opts: FolderOptions = {}): Promise<Dataset> {
  const trainRoot = (await isDirectory(join(dir, 'train'))) ? join(dir, 'train') : dir;
  const classNames = await classFolders(trainRoot);
  if (classNames.length > MAX_CLASSES) {
    throw new DataMismatchError(trainRoot, `${classNames.length} class folders; at most ${MAX_CLASSES} are supported`);
  }
  let train = await listFiles(trainRoot, classNames);
  if (train.length === 0) {
    throw new DataNotFoundError(trainRoot, { detail: `no ${IMAGE_EXTENSIONS.join('/')} images in class folders` });
  }
  let { test } = await testFiles(dir, trainRoot, classNames, opts);
  if (!test) {
    const split = holdOut(train.length, opts.validationSplit ?? 0, opts.seed ?? 0);
    if (split.test.length === 0) {
      throw new ConfigError(`--validation-split ${opts.validationSplit} holds out none of ${train.length} images`);
    }
    test = split.test.map((i) => train[i]);
    train = split.train.map((i) => train[i]);
  }
  const firstFile = train[0].file;
  const shape = targetShape(await probeImage(firstFile, await readImageBytes(firstFile)), opts);
  const job = { shape, firstFile, opts };
  return {
    train: await decodeSplit({ ...job, files: train }),
    test: await decodeSplit({ ...job, files: test }),
    shape,
    numClasses: classNames.length,
    classNames,
    format: 'folders',
    source: dir,
  };
}
