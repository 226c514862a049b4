/**
 * Every failure ringtrain reports, one class each, with a stable `code`.
 * Callers match on `code` (or `instanceof`), never on message text; the original error is kept as `cause`.
 * At network boundaries, `closeCodeFor` maps an error to a WebSocket close code.
 */
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'DATA_CORRUPT'
  | 'DATA_NOT_FOUND'
  | 'DATA_MISMATCH'
  | 'BACKEND_UNAVAILABLE'
  | 'KERNEL_UNSUPPORTED'
  | 'MODEL_UNKNOWN'
  | 'MODEL_INVALID'
  | 'MODEL_UNTRAINABLE'
  | 'STEP_UNTRACEABLE'
  | 'LAYOUT_MISMATCH'
  | 'PROTOCOL_INVALID'
  | 'PROTOCOL_VERSION'
  | 'AUTH_FAILED'
  | 'RENDEZVOUS_TIMEOUT'
  | 'PEER_LOST'
  | 'PEER_BUSY'
  | 'STEP_ABORTED'
  | 'CHECKPOINT_CORRUPT'
  | 'CHECKPOINT_OTHER_RUN'
  | 'PHASE_INVALID'
  | 'RUN_FINISHED';

export class RingtrainError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A command-line option or config value that cannot be used. */
export class ConfigError extends RingtrainError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CONFIG_INVALID', message, options);
  }
}

/** A data file that is truncated, has a wrong magic number, or disagrees with its own header. */
export class DataCorruptError extends RingtrainError {
  constructor(
    readonly file: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super('DATA_CORRUPT', `${file}: ${detail}`, options);
  }
}

/** A data file or directory that does not exist (`detail` says what was looked for). */
export class DataNotFoundError extends RingtrainError {
  constructor(
    readonly file: string,
    options?: { cause?: unknown; detail?: string },
  ) {
    super('DATA_NOT_FOUND', `${file}: ${options?.detail ?? 'not found'}`, options);
  }
}

/**
 * Data that is readable but does not fit the rest: an image of another size or channel count than the dataset's,
 * or a worker's local dataset that differs from the coordinator's.
 */
export class DataMismatchError extends RingtrainError {
  constructor(
    readonly file: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super('DATA_MISMATCH', `${file}: ${detail}`, options);
  }
}

/** A TensorFlow.js backend that was asked for and could not be loaded. */
export class BackendUnavailableError extends RingtrainError {
  constructor(
    readonly backend: string,
    options?: { cause?: unknown },
  ) {
    super('BACKEND_UNAVAILABLE', `backend '${backend}' could not be loaded`, options);
  }
}

/** A kernel configuration ringtrain's own kernels do not implement (for example a dilated convolution on wasm). */
export class KernelUnsupportedError extends RingtrainError {
  constructor(
    readonly kernel: string,
    detail: string,
  ) {
    super('KERNEL_UNSUPPORTED', `${kernel}: ${detail}`);
  }
}

/** A flat buffer whose length does not match the model's parameter layout. */
export class LayoutMismatchError extends RingtrainError {
  constructor(what: string, expected: number, actual: number) {
    super('LAYOUT_MISMATCH', `${what}: expected ${expected} elements, got ${actual}`);
  }
}

/** Bytes or a message that do not follow the wire protocol. */
export class ProtocolError extends RingtrainError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PROTOCOL_INVALID', message, options);
  }
}

/** A peer speaking another protocol version. */
export class ProtocolVersionError extends RingtrainError {
  constructor(
    readonly expected: number,
    readonly actual: unknown,
  ) {
    super('PROTOCOL_VERSION', `protocol version ${String(actual)} is not supported (this build speaks ${expected})`);
  }
}

/** A peer that failed authentication. */
export class AuthError extends RingtrainError {
  constructor(message: string) {
    super('AUTH_FAILED', message);
  }
}

/** Not enough workers joined in time. */
export class RendezvousTimeoutError extends RingtrainError {
  constructor(
    readonly joined: number,
    readonly wanted: number,
    readonly ms: number,
  ) {
    super('RENDEZVOUS_TIMEOUT', `only ${joined} of ${wanted} workers joined within ${ms} ms`);
  }
}

/** A ring neighbour or the coordinator went away. */
export class PeerLostError extends RingtrainError {
  constructor(
    readonly peer: string,
    options?: { cause?: unknown },
  ) {
    super('PEER_LOST', `lost connection to ${peer}`, options);
  }
}

/** A listener that is busy (close code 1013): not a refusal, so dial again after a backoff. */
export class PeerBusyError extends RingtrainError {
  constructor(
    readonly peer: string,
    reason: string,
  ) {
    super('PEER_BUSY', `${peer} is busy (${reason}); try again later`);
  }
}

/** A step abandoned because the membership changed or a peer stalled. */
export class StepAbortedError extends RingtrainError {
  constructor(
    readonly step: number,
    reason: string,
  ) {
    super('STEP_ABORTED', `step ${step} aborted: ${reason}`);
  }
}

/** A checkpoint file that fails its checksum or cannot be parsed. */
export class CheckpointCorruptError extends RingtrainError {
  constructor(
    readonly file: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super('CHECKPOINT_CORRUPT', `${file}: ${detail}`, options);
  }
}

/** A checkpoint written by another run than the one being resumed. */
export class CheckpointRunMismatchError extends RingtrainError {
  constructor(
    readonly file: string,
    readonly expectedRunId: string,
    readonly actualRunId: string,
  ) {
    super('CHECKPOINT_OTHER_RUN', `${file} belongs to run ${actualRunId}, not to run ${expectedRunId}`);
  }
}

/** `--resume` of a run that already finished: nothing to continue (the coordinator says so and exits 0). */
export class RunFinishedError extends RingtrainError {
  constructor(
    readonly runId: string,
    readonly at: string,
  ) {
    super('RUN_FINISHED', `run ${runId} already finished (${at}); nothing to resume`);
  }
}

/** A session asked to move between two phases that are not connected (a bug, or a message out of order). */
export class IllegalTransitionError extends RingtrainError {
  constructor(
    readonly machine: string,
    readonly from: string,
    readonly to: string,
  ) {
    super('PHASE_INVALID', `${machine}: no transition from '${from}' to '${to}'`);
  }
}

/** An unknown model name. */
export class ModelUnknownError extends RingtrainError {
  constructor(
    readonly model: string,
    known: readonly string[],
  ) {
    super('MODEL_UNKNOWN', `unknown model '${model}' (known: ${known.join(', ')})`);
  }
}

/** A model file or module that cannot be used: unreadable, of the wrong shape, or not a classifier. */
export class ModelInvalidError extends RingtrainError {
  constructor(
    readonly source: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super('MODEL_INVALID', `model '${source}': ${detail}`, options);
  }
}

/**
 * A training step that cannot be replayed as one TensorFlow graph (shared/tf/step-trace.ts). Never fatal: the step
 * runs op by op and `reason` is logged.
 */
export class UntraceableStepError extends RingtrainError {
  constructor(readonly reason: string) {
    super('STEP_UNTRACEABLE', `the training step cannot run as one graph: ${reason}`);
  }
}

/** A layer whose training needs a kernel (or a gradient) the active backend does not have. */
export class ModelUntrainableError extends RingtrainError {
  constructor(
    readonly layer: string,
    readonly layerClass: string,
    readonly kernel: string,
    readonly backend: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(
      'MODEL_UNTRAINABLE',
      `layer '${layer}' (${layerClass}) cannot train on backend '${backend}': ${kernel}: ${detail}`,
      options,
    );
  }
}

/** WebSocket close codes used at the boundary (4000-4999 are application codes). */
export const CLOSE_CODES = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  policyViolation: 1008,
  tooBig: 1009,
  internal: 1011,
  /** The listener is busy (its unauthenticated slots are full): not a refusal, dial again after a backoff. */
  tryAgainLater: 1013,
  versionMismatch: 4001,
  staleGeneration: 4002,
  evicted: 4003,
  /** Turned away: the other workers could not reach this worker's ring address (fix --advertise / --listen). */
  ringUnreachable: 4004,
  /** The run ended while this worker was away (evicted, or reconnecting): nothing to rejoin, exit. */
  runEnded: 4005,
} as const;

/** Map an error to the close code a link is closed with. */
export function closeCodeFor(err: unknown): number {
  if (!(err instanceof RingtrainError)) return CLOSE_CODES.internal;
  switch (err.code) {
    case 'AUTH_FAILED':
      return CLOSE_CODES.policyViolation;
    case 'PROTOCOL_VERSION':
      return CLOSE_CODES.versionMismatch;
    case 'PROTOCOL_INVALID':
      return CLOSE_CODES.protocolError;
    case 'PEER_BUSY':
      return CLOSE_CODES.tryAgainLater;
    default:
      return CLOSE_CODES.internal;
  }
}
