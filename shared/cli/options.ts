/**
 * Command-line options shared by the subcommands, parsed with commander. Each option's default is documented in its
 * help text; parsing only collects strings and numbers, validation is validateTrainConfig's job.
 */
import path from 'node:path';
import { Command, Option } from 'commander';
import { ConfigError } from '../errors.js';
import { TRAIN_DEFAULTS, validateTrainConfig, type TrainConfig } from '../config.js';
import { BACKEND_CHOICES, parseBackendChoice, type BackendChoice } from '../tf/backend.js';
import { MODEL_NAMES } from '../train/models.js';
import { COLOR_MODES, IMAGE_FITS, type ColorMode, type ImageFit } from '../data/image.js';
import type { DataOptions } from '../data/load.js';
import { OPTIMIZER_NAMES } from '../train/optim.js';

const D = TRAIN_DEFAULTS;

/** The training options of `ringtrain train`, also accepted by the coordinator and `launch`. */
export function addTrainOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--model <name>', 'model to train').choices(MODEL_NAMES).default(D.model))
    .addOption(new Option('--optimizer <name>', 'optimizer').choices(OPTIMIZER_NAMES).default(D.optimizer))
    .option('--lr <rate>', 'learning rate (default: adam 2e-3, sgd 0.05, adadelta 1.0)', Number)
    .option('--lr-decay <factor>', 'multiply the learning rate by this after every epoch', Number, D.lrDecay)
    .option('--momentum <m>', 'SGD momentum (0 = plain SGD)', Number, D.momentum)
    .option('--epochs <n>', 'number of epochs', Number, D.epochs)
    .option('--batch-size <n>', 'batch size per process (per worker in a cluster)', Number, D.batchSize)
    .option('--seed <n>', 'seed for initial weights and the per-epoch shuffle', Number, D.seed)
    .option('--train-limit <n>', 'use only the first N training samples (0 = all)', Number, D.trainLimit)
    .option('--test-limit <n>', 'evaluate on only the first N test samples (0 = all)', Number, D.testLimit)
    .option(
      '--target-accuracy <a>',
      'stop once test accuracy reaches this fraction (0 = run all epochs)',
      Number,
      D.targetAccuracy,
    )
    .option('--augment <list>', 'seeded training augmentation: flip, crop or flip,crop (default: none)', '')
    .option('--scale-lr', 'cluster: scale the learning rate by the number of workers, with a warmup', D.scaleLr)
    .option(
      '--warmup-epochs <n>',
      'cluster: epochs of linear learning-rate warmup with --scale-lr',
      Number,
      D.warmupEpochs,
    );
}

export function addBackendOptions(cmd: Command): Command {
  return cmd.addOption(
    new Option('--backend <name>', 'TensorFlow.js backend; auto = tensorflow (tfjs-node) where it loads, else wasm')
      .choices(BACKEND_CHOICES)
      .default('auto'),
  );
}

/** --data-dir and how it is read; a worker reading its own copy needs the same values as the coordinator. */
export function addDataDirOption(cmd: Command): Command {
  return cmd
    .option(
      '--data-dir <dir>',
      'dataset: the four MNIST-format IDX files (raw or .gz), CIFAR-10 binary batches, or class folders of images ' +
        '(train/<class>/*.png|jpg, test/<class>/...); default: the embedded MNIST',
    )
    .option('--image-size <HxW>', 'class folders: resize every image to H x W (default: the first image size)')
    .addOption(
      new Option('--image-fit <fit>', 'class folders, with --image-size: stretch, crop the centre, or pad with black')
        .choices(IMAGE_FITS)
        .default('stretch'),
    )
    .addOption(
      new Option('--color-mode <mode>', "class folders: channels (auto = the first image's)")
        .choices(COLOR_MODES)
        .default('auto'),
    )
    .option(
      '--validation-split <f>',
      'class folders without test/: hold out this fraction of train/ as the test split (seeded, the same every run)',
      Number,
      0,
    );
}

/** The data options of addDataDirOption, checked. */
export function readDataOptions(opts: Opts): DataOptions {
  const split = Number(opts.validationSplit ?? 0);
  if (!Number.isFinite(split) || split < 0 || split >= 1) {
    throw new ConfigError(`validation-split must be in [0, 1), got ${String(opts.validationSplit)}`);
  }
  return {
    ...(opts.imageSize !== undefined ? { imageSize: parseImageSize(String(opts.imageSize)) } : {}),
    colorMode: (opts.colorMode as ColorMode | undefined) ?? 'auto',
    fit: (opts.imageFit as ImageFit | undefined) ?? 'stretch',
    validationSplit: split,
  };
}

/** `HxW` (or a single `N` for N x N) -> [height, width]. */
export function parseImageSize(value: string): [number, number] {
  const m = /^(\d+)(?:x(\d+))?$/i.exec(value.trim());
  const size = m ? [Number(m[1]), Number(m[2] ?? m[1])] : [];
  if (size.length !== 2 || size.some((v) => !Number.isInteger(v) || v < 1 || v > 4096)) {
    throw new ConfigError(`image-size must be HxW with sides 1..4096 (e.g. 32x32), got '${value}'`);
  }
  return size as [number, number];
}

export function addOutputOptions(cmd: Command): Command {
  return cmd
    .option('--run-dir <dir>', 'folder for JSON logs and outputs (default: runs/<timestamp>)')
    .option('--summary-json <file>', 'write a JSON summary of the run to this file')
    .addOption(
      new Option('--log-level <level>', 'level of the JSON log file')
        .choices(['trace', 'debug', 'info', 'warn', 'error'])
        .default('info'),
    )
    .option('--quiet', 'no progress display on the terminal', false);
}

type Opts = Record<string, unknown>;

export function readTrainConfig(opts: Opts): TrainConfig {
  return validateTrainConfig({
    model: opts.model,
    optimizer: opts.optimizer,
    lr: opts.lr,
    lrDecay: opts.lrDecay,
    momentum: opts.momentum,
    epochs: opts.epochs,
    batchSize: opts.batchSize,
    seed: opts.seed,
    trainLimit: opts.trainLimit,
    testLimit: opts.testLimit,
    targetAccuracy: opts.targetAccuracy,
    scaleLr: opts.scaleLr,
    warmupEpochs: opts.warmupEpochs,
    augment: opts.augment,
  });
}

export function readBackend(opts: Opts): BackendChoice {
  return parseBackendChoice(String(opts.backend ?? 'auto'));
}

export function defaultRunDir(opts: Opts): string {
  if (typeof opts.runDir === 'string') return opts.runDir;
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  return path.join('runs', `${stamp}-${process.pid}`);
}

/** Parse `HOST:PORT` (IPv6 as `[::1]:PORT`). */
export function parseHostPort(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(value);
  if (!m) throw new ConfigError(`expected HOST:PORT, got '${value}'`);
  const port = Number(m[3]);
  if (port > 65535) throw new ConfigError(`port out of range in '${value}'`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

export function intOption(name: string): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new ConfigError(`${name} must be a non-negative integer, got '${v}'`);
    return n;
  };
}

/**
 * End the process once `done` settles: set the exit code and let pending writes drain, but never hang on a stray
 * handle (the timer is unref'ed, so it only fires if something else keeps the process alive).
 */
export function exitWhenDone(done: Promise<number>, graceMs = 3000): void {
  void done.then((code) => {
    process.exitCode = code;
    setTimeout(() => process.exit(code), graceMs).unref();
  });
}
