/**
 * A scripted worker on an in-memory ControlLink, for unit tests of the coordinator's session logic without sockets,
 * processes or TensorFlow.js. By default it answers like a real worker: `ready` after an assignment, its state on
 * `requestWeights`, and (with `train`) metrics, evaluation and epochDone for every shard.
 */
import { createLinkPair, type ControlLink } from '../../shared/control-link.js';
import { float32ToBytes, PROTOCOL_VERSION, type Message, type MessageOf } from '../../shared/wire/protocol.js';
import type { Coordinator } from '../../coordinator/coordinator.js';

export interface FakeState {
  hasState: boolean;
  step: number;
  epoch: number;
  consumed: number;
  lineage: string;
}

export class FakeWorker {
  readonly link: ControlLink;
  readonly received: Message[] = [];
  gen = 0;
  rank = -1;
  worldSize = 0;
  state: FakeState = { hasState: false, step: 0, epoch: 0, consumed: 0, lineage: '' };
  /** Answer `assign` with `ready`. */
  autoReady = true;
  /** Train every shard: step records, then evalResult and epochDone. */
  train = false;
  /** A value the weights it sends are filled with (to tell sources apart). */
  weightValue: number;
  closed = false;
  private waiters: Array<() => void> = [];

  constructor(
    coord: Coordinator,
    readonly id: string,
    opts: { weightValue?: number; state?: Partial<FakeState> } = {},
  ) {
    const [mine, theirs] = createLinkPair();
    this.link = mine;
    this.weightValue = opts.weightValue ?? 1;
    this.state = { ...this.state, ...opts.state };
    mine.messages((m) => this.onMessage(m));
    void mine.closed.then(() => {
      this.closed = true;
      this.wake();
    });
    coord.admit(theirs, {
      type: 'hello',
      protocolVersion: PROTOCOL_VERSION,
      workerId: id,
      host: `host-${id}`,
      ringHost: `ring-${id}`,
      ringPort: 1000,
      hasData: false,
      backend: 'fake',
      auth: new Uint8Array(32),
    });
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private onMessage(m: Message): void {
    this.received.push(m);
    if (m.type === 'assign') {
      this.gen = m.gen;
      this.rank = m.rank;
      this.worldSize = m.worldSize;
      if (this.autoReady) this.ready();
    } else if (m.type === 'requestWeights') {
      this.sendWeights(m.gen);
    } else if (m.type === 'start') {
      this.state = { hasState: true, step: m.step, epoch: m.epoch, consumed: m.consumed, lineage: m.lineage };
    } else if (m.type === 'shard' && this.train) {
      this.trainShard(m);
    }
    this.wake();
  }

  ready(): void {
    this.link.send({ type: 'ready', gen: this.gen, rank: this.rank, ...this.state });
  }

  sendWeights(gen = this.gen): void {
    this.link.send({
      type: 'weights',
      gen,
      rank: this.rank,
      step: this.state.step,
      weights: float32ToBytes(new Float32Array(4).fill(this.weightValue)),
      optimizer: new Uint8Array(0),
    });
  }

  /** Report steps [from, to) as trained under the current generation. */
  steps(from: number, to: number, epoch = 0): void {
    this.state = { ...this.state, step: to };
    this.report(this.gen, this.rank, from, to, epoch);
  }

  /** Report steps [from, to) as trained under generation `gen` at `rank` (a late report, when it is an old one). */
  report(gen: number, rank: number, from: number, to: number, epoch = 0): void {
    const records = [];
    for (let step = from; step < to; step++) {
      records.push({
        epoch,
        step,
        loss: 1,
        samples: 4,
        dataMs: 0,
        computeMs: 1,
        allreduceMs: 1,
        applyMs: 0,
        reduceScatterMs: 0,
        startedAt: 1,
      });
    }
    this.link.send({ type: 'metrics', gen, rank, records });
  }

  private trainShard(m: MessageOf<'shard'>): void {
    const batches = Math.ceil(m.indices.byteLength / 4 / 4);
    this.steps(m.firstStep, m.firstStep + batches, m.epoch);
    this.state = { ...this.state, epoch: m.epoch, consumed: m.epochSamples };
    this.link.send({
      type: 'evalResult',
      gen: m.gen,
      rank: this.rank,
      epoch: m.epoch,
      correct: 9,
      total: 10,
      lossSum: 1,
    });
    this.link.send({ type: 'epochDone', gen: m.gen, rank: this.rank, epoch: m.epoch, steps: batches, trainMs: 10 });
  }

  stall(step: number, waitingMs: number, peerRank: number): void {
    this.link.send({ type: 'stall', gen: this.gen, rank: this.rank, step, waitingMs, peerRank });
  }

  heartbeat(): void {
    this.link.send({ type: 'heartbeat', gen: this.gen, rank: this.rank, step: this.state.step });
  }

  /** The messages of one type received so far. */
  all<T extends Message['type']>(type: T): MessageOf<T>[] {
    return this.received.filter((m): m is MessageOf<T> => m.type === type);
  }

  /** Resolve once a message of `type` (matching `pred`) has arrived, or the link closed (then rejects). */
  async next<T extends Message['type']>(
    type: T,
    pred: (m: MessageOf<T>) => boolean = () => true,
  ): Promise<MessageOf<T>> {
    const deadline = Date.now() + 5_000;
    for (;;) {
      const found = this.all(type).find(pred);
      if (found) return found;
      if (this.closed) throw new Error(`${this.id}: link closed before a '${type}' arrived`);
      if (Date.now() > deadline) throw new Error(`${this.id}: no '${type}' within 5 s`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50); // keeps the test's event loop alive while the coordinator's timers are unref'd
      });
    }
  }

  /** Resolve once the coordinator closed this worker's link. */
  async gone(ms = 5_000): Promise<number> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.id}: link still open after ${ms} ms`)), ms);
    });
    try {
      return (await Promise.race([this.link.closed, timeout])).code;
    } finally {
      clearTimeout(timer);
    }
  }
}
