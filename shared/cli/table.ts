/**
 * Every command-line option of ringtrain, declared once. From these tables come the commander options of each
 * subcommand (options.ts), the typed config objects (`ValuesOf<typeof TABLE>`), the validation of the training config
 * a worker receives over the network (shared/config.ts), and what `launch` passes on to the coordinator and workers.
 *
 * Adding an option is one entry in the right table:
 *   myOption: int({ flag: 'my-option', arg: 'n', help: 'what it does', default: 3,
 *                   roles: ['coordinator', 'launch'], forward: 'coordinator' }),
 * - the key (`myOption`) is the field name in the typed config; `flag` is the spelling after `--`;
 * - builders (spec.ts): `int` (with `min`/`max`), `real`, `text`, `choice(list, ...)`, `flag` (no argument);
 *   an option without `default` is optional (`number | undefined` in the config);
 * - `roles`: the subcommands that accept it: train, coordinator, worker, launch;
 * - `forward`: whom `launch` passes it on to ('coordinator', 'worker' or 'both'); launch must be one of the roles.
 *   Options launch sets itself (ports, addresses, --min-workers, --run-dir, the token) are not forwarded;
 * - TRAIN_OPTIONS and RUN_OPTIONS travel in `assign.config` and are validated there with the same `check`;
 * - then read it where it is used: `cfg.myOption`. Help text states the unit; the default is shown by commander.
 * The tests (test/cli-options.test.ts) check that no role has a flag twice and that launch forwards every option of
 * the coordinator and the workers or handles it itself.
 */
import { COMPRESSIONS } from '../ring/allreduce.js';
import { BACKEND_CHOICES } from '../tf/names.js';
import { ConfigError } from '../errors.js';
import { MODEL_NAMES, OPTIMIZER_NAMES, parseModelSpec } from '../train/names.js';
import { parseAugment } from '../data/augment.js';
import { COLOR_MODES, IMAGE_FITS, parseImageSize } from '../data/image-options.js';
import { choice, flag, int, real, refine, text, type OptionTable } from './spec.js';
import { LAUNCH_OPTIONS } from './table-launch.js';

export { LAUNCH_OPTIONS };

const TRAINING = ['train', 'coordinator', 'launch'] as const;
const CLUSTER = ['coordinator', 'launch'] as const;
const WORKERS = ['worker', 'launch'] as const;

/** The training config (`TrainConfig`): `ringtrain train`, and the coordinator, which sends it to every worker. */
export const TRAIN_OPTIONS = {
  // A built-in name or a file: a model module (.js/.mjs) or a layers model.json (shared/train/model-spec.ts).
  model: refine(
    text({
      flag: 'model',
      arg: 'name|path',
      help: `model to train: ${MODEL_NAMES.join(', ')}, a model module (.js/.mjs) or a layers model.json`,
      default: 'lenet5',
      roles: TRAINING,
      forward: 'coordinator',
    }),
    (v) => parseModelSpec(String(v)),
  ),
  optimizer: choice(OPTIMIZER_NAMES, {
    flag: 'optimizer',
    arg: 'name',
    help: 'optimizer',
    default: 'adam',
    roles: TRAINING,
    forward: 'coordinator',
  }),
  lr: real({
    flag: 'lr',
    arg: 'rate',
    help: 'learning rate (default: adam 2e-3, sgd 0.05, adadelta 1.0)',
    min: 1e-9,
    max: 100,
    roles: TRAINING,
    forward: 'coordinator',
  }),
  lrDecay: real({
    flag: 'lr-decay',
    arg: 'factor',
    help: 'multiply the learning rate by this after every epoch',
    default: 0.7,
    min: 0,
    max: 1,
    roles: TRAINING,
    forward: 'coordinator',
  }),
  momentum: real({
    flag: 'momentum',
    arg: 'm',
    help: 'SGD momentum (0 = plain SGD)',
    default: 0.9,
    min: 0,
    max: 0.9999,
    roles: TRAINING,
    forward: 'coordinator',
  }),
  epochs: int({
    flag: 'epochs',
    arg: 'n',
    help: 'number of epochs',
    default: 5,
    min: 1,
    roles: TRAINING,
    forward: 'coordinator',
  }),
  batchSize: int({
    flag: 'batch-size',
    arg: 'n',
    help: 'batch size per process (per worker in a cluster)',
    default: 64,
    min: 1,
    roles: TRAINING,
    forward: 'coordinator',
  }),
  seed: int({
    flag: 'seed',
    arg: 'n',
    help: 'seed for initial weights and the per-epoch shuffle',
    default: 42,
    roles: TRAINING,
    forward: 'coordinator',
  }),
  trainLimit: int({
    flag: 'train-limit',
    arg: 'n',
    help: 'use only the first N training samples (0 = all)',
    default: 0,
    roles: TRAINING,
    forward: 'coordinator',
  }),
  testLimit: int({
    flag: 'test-limit',
    arg: 'n',
    help: 'evaluate on only the first N test samples (0 = all)',
    default: 0,
    roles: TRAINING,
    forward: 'coordinator',
  }),
  targetAccuracy: real({
    flag: 'target-accuracy',
    arg: 'a',
    help: 'stop once test accuracy reaches this fraction (0 = run all epochs)',
    default: 0,
    min: 0,
    max: 1,
    roles: TRAINING,
    forward: 'coordinator',
  }),
  // On by default in a cluster (Horovod's lr * size): measured, `launch -np 2` reaches 99% MNIST test accuracy with it
  // and stays at 98.85% after 5 epochs without it. `ringtrain train` is one worker, where it changes nothing.
  scaleLr: flag({
    flag: 'scale-lr',
    help: 'cluster: scale the learning rate by the number of workers, with --warmup-epochs (on in a cluster)',
    default: false,
    roleDefaults: { coordinator: true, launch: true },
    roles: TRAINING,
    forward: 'coordinator',
  }),
  // No warmup by default: scaling by a few workers (Horovod's pytorch_mnist recipe, lr * size) needs none; measured on
  // LeNet-5/MNIST with 2 and 4 workers, a 1-epoch warmup never reached 99% in fewer epochs and once took 6 instead of 3.
  // Large worlds should ask for one, as Goyal et al. do for 256 GPUs.
  warmupEpochs: real({
    flag: 'warmup-epochs',
    arg: 'n',
    help: 'cluster: epochs of linear learning-rate warmup with --scale-lr',
    default: 0,
    min: 0,
    max: 1000,
    roles: TRAINING,
    forward: 'coordinator',
  }),
  // Stored canonical ('flip,crop'); shared/data/augment.ts turns it into the transforms.
  augment: refine(
    text({
      flag: 'augment',
      arg: 'list',
      help: 'seeded training augmentation of every batch: flip, crop or flip,crop (pad-and-crop); none = ""',
      default: '',
      roles: TRAINING,
      forward: 'coordinator',
    }),
    (v, name) => {
      if (typeof v !== 'string') throw new ConfigError(`${name} must be a string, got ${typeof v}`);
      return parseAugment(v, name).join(',');
    },
  ),
} satisfies OptionTable;

/** Settings of a cluster run the coordinator also sends to every worker in `assign.config`. */
export const RUN_OPTIONS = {
  checkEvery: int({
    flag: 'check-every',
    arg: 'steps',
    help: 'compare replica parameter hashes every N steps (0 = never)',
    default: 100,
    roles: CLUSTER,
    forward: 'coordinator',
  }),
  reportEvery: int({
    flag: 'report-every',
    arg: 'steps',
    help: 'workers send step metrics every N steps',
    default: 10,
    min: 1,
    roles: CLUSTER,
    forward: 'coordinator',
  }),
  nonFinite: choice(['skip', 'abort'], {
    flag: 'on-nonfinite',
    arg: 'action',
    help: 'NaN/Inf in the averaged gradients: skip the step on every worker, or abort',
    default: 'skip',
    roles: CLUSTER,
    forward: 'coordinator',
  }),
  compression: choice(COMPRESSIONS, {
    flag: 'compression',
    arg: 'codec',
    help: 'gradient wire encoding: fp16 halves the allreduce bytes (as hvd.Compression.fp16)',
    default: 'none',
    roles: CLUSTER,
    forward: 'coordinator',
  }),
} satisfies OptionTable;

/** The coordinator process (`startCoordinator`). */
export const COORDINATOR_OPTIONS = {
  host: text({
    flag: 'host',
    arg: 'host',
    help: 'address the coordinator listens on',
    default: '0.0.0.0',
    roles: CLUSTER,
  }),
  port: int({
    flag: 'port',
    arg: 'port',
    help: 'control port workers connect to (0 = any free port)',
    default: 29500,
    roleDefaults: { launch: 0 },
    max: 65535,
    roles: CLUSTER,
  }),
  minWorkers: int({
    flag: 'min-workers',
    arg: 'n',
    help: 'train only while at least this many workers are connected (launch: default -np, below it the run is elastic)',
    default: 1,
    min: 1,
    roles: CLUSTER,
  }),
  maxWorkers: int({
    flag: 'max-workers',
    arg: 'n',
    help: 'admit at most this many workers (0 = no limit)',
    default: 0,
    roles: CLUSTER,
    forward: 'coordinator',
  }),
  rendezvousTimeoutMs: int({
    flag: 'rendezvous-timeout',
    arg: 'ms',
    help: 'give up if too few workers joined within this time',
    default: 300_000,
    roles: CLUSTER,
    forward: 'coordinator',
  }),
  stallAbortMs: int({
    flag: 'stall-abort-ms',
    arg: 'ms',
    help: 'evict the worker a step has waited on this long (0 = never)',
    default: 60_000,
    roles: CLUSTER,
    forward: 'coordinator',
  }),
  lingerMs: int({
    flag: 'linger-ms',
    arg: 'ms',
    help: 'after the run ends, wait this long for workers it evicted as unresponsive to learn the end',
    default: 15_000,
    roles: CLUSTER,
    forward: 'coordinator',
  }),
  checkpointEvery: int({
    flag: 'checkpoint-every',
    arg: 'steps',
    help: 'checkpoint every N steps (0 = at the end of every epoch only)',
    default: 0,
    roles: CLUSTER,
    forward: 'coordinator',
  }),
  checkpointKeep: int({
    flag: 'checkpoint-keep',
    arg: 'n',
    help: 'checkpoints to keep',
    default: 3,
    min: 1,
    roles: CLUSTER,
    forward: 'coordinator',
  }),
  resume: flag({
    flag: 'resume',
    help: 'continue the run in --run-dir from its newest valid checkpoint (of the run in --run-dir/run.json)',
    default: false,
    roles: CLUSTER,
    forward: 'coordinator',
  }),
  resumeRun: text({
    flag: 'resume-run',
    arg: 'id',
    help: "with --resume: accept this run's checkpoints instead of the run recorded in --run-dir/run.json",
    roles: CLUSTER,
    forward: 'coordinator',
  }),
  maxPayloadBytes: int({
    flag: 'max-payload',
    arg: 'bytes',
    help: 'largest control message accepted from a worker',
    default: 64 * 1024 * 1024,
    min: 1024,
    roles: CLUSTER,
    forward: 'coordinator',
  }),
  authTimeoutMs: int({
    flag: 'auth-timeout',
    arg: 'ms',
    help: 'close links that have not authenticated within this time',
    default: 5_000,
    min: 1,
    roles: CLUSTER,
    forward: 'coordinator',
  }),
  dashboardHost: text({
    flag: 'dashboard-host',
    arg: 'host',
    help: 'address of the monitoring dashboard',
    default: '127.0.0.1',
    roles: CLUSTER,
    forward: 'coordinator',
  }),
  dashboardPort: int({
    flag: 'dashboard-port',
    arg: 'port',
    help: 'dashboard port (0 = any free port)',
    default: 8080,
    max: 65535,
    roles: CLUSTER,
    forward: 'coordinator',
  }),
  timeline: text({
    flag: 'timeline',
    arg: 'file',
    help: 'write a Chrome trace of every step of every worker (Perfetto, chrome://tracing)',
    roles: CLUSTER,
    forward: 'coordinator',
  }),
} satisfies OptionTable;

/** A worker process (`startWorker`). */
export const WORKER_OPTIONS = {
  coordinator: text({
    flag: 'coordinator',
    arg: 'url',
    help: 'the coordinator, as ws://HOST:PORT (wss:// with TLS)',
    required: true,
    roles: ['worker'],
  }),
  listen: text({
    flag: 'listen',
    arg: 'host:port',
    help: 'ring listener address (port 0 = any free port)',
    default: '0.0.0.0:0',
    roles: ['worker'],
  }),
  advertise: text({
    flag: 'advertise',
    arg: 'host',
    help: "address ring peers dial to reach this worker (default: this machine's hostname)",
    roles: ['worker'],
  }),
  debugDelayMs: int({
    flag: 'debug-delay-ms',
    arg: 'ms',
    help: 'testing: sleep this long before every step (a slow worker)',
    default: 0,
    roles: ['worker'],
  }),
  stallWarnMs: int({
    flag: 'stall-warn-ms',
    arg: 'ms',
    help: 'workers warn when a step waits on a ring peer this long',
    default: 10_000,
    roles: WORKERS,
    forward: 'worker',
  }),
  coordinatorRetryMs: int({
    flag: 'coordinator-retry-ms',
    arg: 'ms',
    help: 'workers keep reconnecting to a lost coordinator this long',
    default: 120_000,
    roles: WORKERS,
    forward: 'worker',
  }),
  maxPayloadBytes: int({
    flag: 'max-payload',
    arg: 'bytes',
    help: 'largest message accepted on any link',
    default: 256 * 1024 * 1024,
    min: 1024,
    roles: ['worker'],
  }),
  ringConnectTimeoutMs: int({
    flag: 'ring-timeout',
    arg: 'ms',
    help: 'time allowed to set up the ring links',
    default: 30_000,
    min: 1,
    roles: WORKERS,
    forward: 'worker',
  }),
  tlsCa: text({
    flag: 'tls-ca',
    arg: 'file',
    help: 'workers trust this CA (PEM) for a wss:// coordinator and wss:// ring peers (a path on each host)',
    roles: WORKERS,
    forward: 'worker',
  }),
  name: text({
    flag: 'name',
    arg: 'name',
    help: 'log file name inside --run-dir',
    default: 'worker',
    roles: ['worker'],
  }),
} satisfies OptionTable;

const DATA_ROLES = ['train', 'coordinator', 'worker', 'launch', 'evaluate'] as const;

/**
 * How --data-dir is read (class folders only). A worker reading its own copy must use the coordinator's values (it is
 * refused otherwise), so launch forwards them to both.
 */
export const DATA_OPTIONS = {
  imageSize: refine(
    text({
      flag: 'image-size',
      arg: 'HxW',
      help: 'class folders: resize every image to H x W pixels (default: the first image size)',
      roles: DATA_ROLES,
      forward: 'both',
    }),
    (v, name) => {
      if (typeof v !== 'string') throw new ConfigError(`${name} must be a string, got ${typeof v}`);
      parseImageSize(v, name);
      return v;
    },
  ),
  imageFit: choice(IMAGE_FITS, {
    flag: 'image-fit',
    arg: 'fit',
    help: 'class folders, with --image-size: stretch, crop the centre, or pad with black to keep the aspect ratio',
    default: 'stretch',
    roles: DATA_ROLES,
    forward: 'both',
  }),
  colorMode: choice(COLOR_MODES, {
    flag: 'color-mode',
    arg: 'mode',
    help: "class folders: grayscale (1 channel) or rgb (3); auto = the first image's",
    default: 'auto',
    roles: DATA_ROLES,
    forward: 'both',
  }),
  validationSplit: real({
    flag: 'validation-split',
    arg: 'f',
    help: 'class folders without test/: hold out this fraction of train/ as the test split (seeded, same every run)',
    default: 0,
    min: 0,
    max: 0.99,
    roles: DATA_ROLES,
    forward: 'both',
  }),
} satisfies OptionTable;

/** Options more than one role takes with the same meaning. */
export const COMMON_OPTIONS = {
  tlsCert: text({
    flag: 'tls-cert',
    arg: 'file',
    help: 'TLS certificate (PEM): the coordinator serves wss:// with it, a worker its ring listener (peers dial wss://)',
    roles: ['coordinator', 'worker', 'launch'],
    forward: 'both',
  }),
  tlsKey: text({
    flag: 'tls-key',
    arg: 'file',
    help: 'private key for --tls-cert (PEM)',
    roles: ['coordinator', 'worker', 'launch'],
    forward: 'both',
  }),
  token: text({
    flag: 'token',
    arg: 'secret',
    help: 'cluster token workers prove they know (default: RINGTRAIN_TOKEN; coordinator and launch: else a generated one, printed)',
    roles: ['coordinator', 'worker', 'launch'],
  }),
  heartbeatMs: int({
    flag: 'heartbeat-ms',
    arg: 'ms',
    help: 'heartbeat and ping interval on every link',
    default: 1_000,
    min: 1,
    roles: ['coordinator', 'worker', 'launch'],
    forward: 'both',
  }),
  heartbeatMisses: int({
    flag: 'heartbeat-misses',
    arg: 'n',
    help: 'missed heartbeats before a worker or link is declared dead',
    default: 5,
    min: 1,
    roles: ['coordinator', 'worker', 'launch'],
    forward: 'both',
  }),
  backend: choice(BACKEND_CHOICES, {
    flag: 'backend',
    arg: 'name',
    help: 'TensorFlow.js backend; auto = tensorflow (tfjs-node) where it loads, else wasm',
    default: 'auto',
    roles: ['train', 'worker', 'launch', 'evaluate'],
    forward: 'worker',
  }),
  threads: int({
    flag: 'threads',
    arg: 'n',
    help: "TensorFlow threads per process (default: the backend's; launch: cores / local workers)",
    min: 1,
    max: 1024,
    roles: ['train', 'worker', 'launch', 'evaluate'],
    forward: 'worker',
  }),
  stepGraph: choice(['auto', 'off'], {
    flag: 'step-graph',
    arg: 'mode',
    help: "tensorflow backend: each step's gradients in one compiled TensorFlow graph (auto), or op by op (off)",
    default: 'auto',
    roles: ['train', 'worker', 'launch'],
    forward: 'worker',
  }),
  dataDir: text({
    flag: 'data-dir',
    arg: 'dir',
    help:
      'dataset: the four MNIST-format IDX files (raw or .gz), CIFAR-10 binary batches, or class folders of images ' +
      '(train/<class>/*.png|jpg, test/<class>/...); default: the embedded MNIST',
    roles: ['train', 'coordinator', 'worker', 'launch', 'evaluate'],
    forward: 'both',
  }),
  runDir: text({
    flag: 'run-dir',
    arg: 'dir',
    help: 'folder for JSON logs and outputs (default: runs/<timestamp>; worker: none, warnings on stderr only)',
    roles: ['train', 'coordinator', 'worker', 'launch'],
  }),
  summaryJson: text({
    flag: 'summary-json',
    arg: 'file',
    help: 'write a JSON summary of the run to this file',
    roles: TRAINING,
    forward: 'coordinator',
  }),
  logLevel: choice(['trace', 'debug', 'info', 'warn', 'error'], {
    flag: 'log-level',
    arg: 'level',
    help: 'level of the JSON log file',
    default: 'info',
    roles: ['train', 'coordinator', 'worker', 'launch'],
    forward: 'both',
  }),
  quiet: flag({
    flag: 'quiet',
    help: 'no progress display on the terminal',
    default: false,
    roles: TRAINING,
    forward: 'coordinator',
  }),
} satisfies OptionTable;

/** `ringtrain train` only. */
export const SINGLE_OPTIONS = {
  saveDir: text({
    flag: 'save-dir',
    arg: 'dir',
    help: 'where to save the trained model (default: <run-dir>/model)',
    roles: ['train'],
  }),
  save: flag({ flag: 'no-save', help: 'do not save the trained model', default: true, roles: ['train'] }),
} satisfies OptionTable;

/** Every table, in the order their options appear in the help. */
export const ALL_TABLES = [
  LAUNCH_OPTIONS,
  TRAIN_OPTIONS,
  SINGLE_OPTIONS,
  COORDINATOR_OPTIONS,
  RUN_OPTIONS,
  WORKER_OPTIONS,
  COMMON_OPTIONS,
  DATA_OPTIONS,
] as const;
