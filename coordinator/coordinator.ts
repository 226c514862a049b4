/**
 * The coordinator: the control plane of a run. It takes authenticated workers as ControlLinks, assigns ranks and ring
 * neighbours under a membership generation, restores every replica from one state (restore.ts), plans each
 * generation's share of the epoch, collects metrics and evaluations, asks rank 0 for checkpoints, stops the cluster
 * at the end. Gradients never pass through it. It does no I/O: every fact is one event on the run's stream (outputs.ts
 * and the dashboard observe it); checkpoints go to a store it is handed. Run phases (RUN_PHASES, one transition
 * function): rendezvous -> forming -> syncing -> training -> ended; forming again on every membership change, waiting
 * while fewer than --min-workers remain.
 */
import { randomUUID } from 'node:crypto';
import type { ControlLink, LinkClosed } from '../shared/control-link.js';
import { CLOSE_CODES, ProtocolError, RendezvousTimeoutError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { PhaseMachine } from '../shared/phases.js';
import {
  bytesToFloat32,
  float32ToBytes,
  PROTOCOL_VERSION,
  type Message,
  type MessageOf,
} from '../shared/wire/protocol.js';
import { planFrom, positionAt, type EpochPlan, type Position } from './epoch-plan.js';
import { RunEvents, type RunEvent, type WorkerView } from './events.js';
import { blameNotReady } from './blame.js';
import { planShard } from './data-plan.js';
import { joinRefusal } from './joiners.js';
import { FinalModelFetch } from './final-model.js';
import { RingHealth } from './ring-health.js';
import { exitCodeOfOutcome } from '../shared/exit-codes.js';
import { chooseRestore } from './restore.js';
import { RunState } from './run-state.js';
import { summarize } from './summary.js';
import { RUN_PHASES, type ClusterSummary, type CoordinatorDeps, type HeldStateRecord } from './run-types.js';
import type { RunPhase, WorkerRecord } from './run-types.js';
import { EndLinger } from './linger.js';
import { LateRecords } from './late-records.js';
import { StallInspector } from './stall.js';

const pick = ({ id, rank, host, backend }: WorkerRecord) => ({ id, rank, host, backend });

export class Coordinator {
  readonly runId: string;
  private readonly phase = new PhaseMachine<RunPhase>('coordinator', 'rendezvous', RUN_PHASES);
  private gen = 0;
  private readonly workers = new Set<WorkerRecord>();
  private members: WorkerRecord[] = [];
  private readonly state = new RunState(1);
  private position: Position = { epoch: 0, consumed: 0, step: 0 };
  private plan?: EpochPlan;
  /** The history the replicas' state belongs to (coordinator/restore.ts). */
  private lineage = '';
  /** The state restores fall back on: the resume checkpoint, then the last one committed. */
  private held?: HeldStateRecord;
  /** Syncing: the rank whose weights every replica is restored from. */
  private syncFrom?: number;
  /** Training: a checkpoint asked of rank 0 and not answered yet. */
  private checkpointAsked = false;
  private nextCheckpointStep = 0;
  private readonly started = performance.now();
  private timers: NodeJS.Timeout[] = [];
  private formingTimer?: NodeJS.Timeout;
  private stallJudge?: NodeJS.Timeout;
  private resolveDone!: (s: ClusterSummary) => void;
  readonly done = new Promise<ClusterSummary>((resolve) => {
    this.resolveDone = resolve;
  });
  private summary?: ClusterSummary;
  private readonly log: Logger;
  private readonly events = new RunEvents();
  private readonly stalls = new StallInspector();
  /** Consecutive re-forms because every rank stalled, without a step done in between. */
  private stuckRings = 0;
  private readonly ringHealth = new RingHealth({
    members: () => this.members,
    gen: () => (this.phase.is('training') ? this.gen : -1),
    evict: (w, reason) => this.evict(w, reason),
    reform: (reason) => this.reform(reason),
    heartbeatMs: () => this.d.opts.heartbeatMs,
  });
  private finalModel?: FinalModelFetch;
  private readonly linger = new EndLinger();
  private readonly late = new LateRecords();

  constructor(private readonly d: CoordinatorDeps) {
    this.log = d.log;
    this.runId = d.runId;
    for (const o of d.observers) this.events.add(o);
    if (d.resume) {
      this.position = d.resume.position;
      this.lineage = d.resume.lineage;
      this.held = { ...d.resume, origin: 'checkpoint' };
      this.state.restoreHistory(d.resume.history, d.resume.totalSamples);
    }
    this.nextCheckpointStep = this.position.step + d.opts.checkpointEvery;
  }

  begin(): void {
    const t = this.d.train;
    const { minWorkers, rendezvousTimeoutMs } = this.d.opts;
    const late = () => new RendezvousTimeoutError(this.workers.size, minWorkers, rendezvousTimeoutMs);
    const failLate = (e = late()) => this.finish('failed', `${e.message} [${e.code}]`);
    this.timers.push(setTimeout(() => this.phase.is('rendezvous') && failLate(), rendezvousTimeoutMs));
    this.timers.push(setInterval(() => this.checkHeartbeats(), this.d.opts.heartbeatMs));
    for (const timer of this.timers) timer.unref();
    this.emit({
      kind: 'runStarted',
      runId: this.runId,
      model: t.model,
      epochs: t.epochs,
      minWorkers: this.d.opts.minWorkers,
      batchSize: t.batchSize,
    });
    const r = this.d.resume;
    if (r) this.notice('info', 'resuming from checkpoint', { ...r.position, ...(r.file ? { file: r.file } : {}) });
  }

  private emit(event: RunEvent): void {
    this.events.emit(event, (err) => this.log.warn({ err, kind: event.kind }, 'run observer failed'));
  }

  private notice(level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>): void {
    this.emit({ kind: 'notice', level, message, ...(fields ? { fields } : {}) });
  }

  private view = (w: WorkerRecord, state: WorkerView['state']): WorkerView => ({ ...pick(w), state });

  /** An authenticated link: its hello was verified by the admission step. */
  admit(link: ControlLink, hello: MessageOf<'hello'>): void {
    this.linger.returned(hello.workerId);
    if (this.phase.is('ended')) return void link.close(CLOSE_CODES.runEnded, 'run ended');
    if (this.ringHealth.turnedAway(link, hello)) return;
    const refusal = joinRefusal(hello, this.d.dataInfo, [...this.workers][0]?.backend);
    if (refusal) {
      this.notice('warn', `worker turned away: ${refusal}`, { host: hello.host, workerId: hello.workerId });
      return void link.close(CLOSE_CODES.policyViolation, refusal);
    }
    const max = this.d.opts.maxWorkers;
    if (max > 0 && this.workers.size >= max) {
      this.notice('warn', 'worker turned away: cluster full', { host: hello.host, max });
      return void link.close(CLOSE_CODES.goingAway, 'cluster full');
    }
    const worker: WorkerRecord = {
      id: hello.workerId,
      link,
      host: hello.host,
      ringHost: hello.ringHost,
      ringPort: hello.ringPort,
      hasData: hello.hasData,
      backend: hello.backend,
      rank: -1,
      since: Infinity,
      lastSeen: Date.now(),
      evicted: false,
      log: this.log.child({ workerId: hello.workerId, host: hello.host }),
    };
    this.workers.add(worker);
    link.messages((m) => this.onMessage(worker, m));
    void link.closed.then((closed) => this.onClose(worker, closed));
    link.send({ type: 'welcome', protocolVersion: PROTOCOL_VERSION, workerId: hello.workerId, runId: this.runId });
    this.emit({ kind: 'workerJoined', worker: this.view(worker, 'joined') });
    if (this.phase.is('rendezvous', 'waiting')) {
      if (this.workers.size >= this.d.opts.minWorkers) this.reform('enough workers joined');
    } else {
      this.reform('a worker joined');
    }
  }

  private onMessage(worker: WorkerRecord, message: Message): void {
    if (!this.workers.has(worker) || worker.evicted || this.phase.is('ended')) return;
    worker.lastSeen = Date.now();
    try {
      this.dispatch(worker, message);
    } catch (err) {
      worker.log.warn(
        { err: (err as Error).message, code: (err as ProtocolError).code, type: message.type },
        'rejected a worker message; closing its link',
      );
      worker.link.close(CLOSE_CODES.protocolError, 'unexpected message');
    }
  }

  private dispatch(worker: WorkerRecord, m: Message): void {
    if (m.type === 'heartbeat') return this.onHeartbeat(worker, m);
    if (!('gen' in m) || !('rank' in m)) throw new ProtocolError(`'${m.type}' is not expected from a worker now`);
    if (m.gen !== this.gen || m.rank !== worker.rank) {
      if (m.type === 'metrics' && this.late.isLate(worker.id, m)) return this.keepLate(this.late.take(m));
      worker.log.debug({ gen: m.gen, current: this.gen, type: m.type }, 'dropping a message of another generation');
      return;
    }
    switch (m.type) {
      case 'ready':
        return this.onReady(worker, m);
      case 'weights':
        return this.onWeights(worker, m);
      case 'metrics':
        return this.onMetrics(worker, m);
      case 'evalResult':
        this.state.addEval(m);
        return this.maybeFinishEpoch(m.epoch);
      case 'epochDone':
        this.state.addEpochDone(m);
        return this.maybeFinishEpoch(m.epoch);
      case 'stall':
        return this.onStall(worker, m);
      case 'ringLinkDown':
        return this.ringHealth.onLinkDown(worker, m);
      case 'failed':
        return this.finish('failed', `rank ${worker.rank} failed: ${m.message} [${m.code}]`);
      default:
        throw new ProtocolError(`'${m.type}' is not a worker message`);
    }
  }

  private onHeartbeat(worker: WorkerRecord, m: MessageOf<'heartbeat'>): void {
    if (m.gen === this.gen && m.rank === worker.rank) this.stalls.heard(worker.rank, m.step);
  }

  /** New membership: every connected worker, old ranks first, under a new generation. */
  private reform(reason: string): void {
    if (this.phase.is('ended') || this.finalModel) return;
    const before = new Set(this.members);
    this.late.replaced(this.gen, this.members);
    this.gen++;
    this.syncFrom = undefined;
    this.checkpointAsked = false;
    this.stalls.reset();
    clearTimeout(this.formingTimer);
    clearTimeout(this.stallJudge);
    this.stallJudge = undefined;
    const all = [...this.workers];
    this.members = [
      ...all.filter((w) => before.has(w)).sort((a, b) => a.rank - b.rank),
      ...all.filter((w) => !before.has(w)),
    ];
    if (this.members.length < this.d.opts.minWorkers) {
      this.phase.to('waiting');
      this.notice('warn', `paused: ${this.members.length} of ${this.d.opts.minWorkers} workers (${reason})`, {
        gen: this.gen,
      });
      return;
    }
    this.phase.to('forming');
    this.armFormingTimer();
    const n = this.members.length;
    this.state.newGeneration(n, this.position.step);
    this.members.forEach((w, rank) => this.assign(w, rank));
    if (this.gen > 1) this.notice('info', `ring re-formed with ${n} workers (${reason})`, { gen: this.gen });
    this.emit({ kind: 'ringFormed', gen: this.gen, workers: this.members.map((w) => this.view(w, 'joined')) });
  }

  private assign(w: WorkerRecord, rank: number): void {
    const n = this.members.length;
    w.rank = rank;
    w.ready = undefined;
    w.since = Math.min(w.since, this.gen);
    w.log = this.log.child({ workerId: w.id, host: w.host, rank });
    const next = this.members[(rank + 1) % n]!;
    w.link.send({
      type: 'assign',
      gen: this.gen,
      rank,
      worldSize: n,
      predecessorRank: (rank - 1 + n) % n,
      successor: { host: next.ringHost, port: next.ringPort, rank: (rank + 1) % n },
      config: {
        ...this.d.train,
        checkEvery: this.d.opts.checkEvery,
        reportEvery: this.d.opts.reportEvery,
        nonFinite: this.d.opts.nonFinite,
        compression: this.d.opts.compression ?? 'none',
      },
      ...(this.d.model ? { modelTopology: this.d.model.topology } : {}),
    });
  }

  /** Members whose ring links never come up (a wrong --advertise address, a closed port) are evicted, not the run. */
  private armFormingTimer(): void {
    const gen = this.gen;
    this.formingTimer = setTimeout(() => {
      if (this.gen === gen && this.phase.is('forming')) this.onFormingTimeout();
    }, this.d.opts.ringFormTimeoutMs);
    this.formingTimer.unref();
  }

  /** Members whose ring links never come up are evicted (coordinator/blame.ts says which), not the whole run. */
  private onFormingTimeout(): void {
    const notReady = this.members.filter((w) => !w.ready);
    const blamed = blameNotReady(
      this.members.map((w) => ({ ready: !!w.ready, newcomer: w.since === this.gen && this.gen > 1 })),
    ).map((rank) => this.members[rank]!);
    const ms = this.d.opts.ringFormTimeoutMs;
    const where = (w: WorkerRecord) => `rank ${w.rank} (${w.ringHost}:${w.ringPort})`;
    if (blamed.length === this.members.length) {
      return this.finish(
        'failed',
        `ring links did not come up within ${ms} ms; not ready: ${notReady.map(where).join(', ')}; ` +
          "check that each worker's --advertise address and ring port are reachable from the others",
      );
    }
    for (const w of blamed) this.evict(w, `ring links not up within ${ms} ms at ${w.ringHost}:${w.ringPort}`);
  }

  private onReady(worker: WorkerRecord, m: MessageOf<'ready'>): void {
    worker.ready = m;
    if (this.phase.is('forming') && this.members.every((w) => w.ready)) this.beginSync();
  }

  private beginSync(): void {
    clearTimeout(this.formingTimer);
    this.phase.to('syncing');
    const members = this.members.map((w) => ({
      rank: w.rank,
      hasState: w.ready!.hasState,
      lineage: w.ready!.lineage,
      position: { epoch: w.ready!.epoch, consumed: w.ready!.consumed, step: w.ready!.step },
    }));
    const source = chooseRestore(members, this.held, this.lineage);
    if (source.kind === 'held') return this.restoreHeld();
    this.syncFrom = source.rank;
    this.members[source.rank]!.link.send({ type: 'requestWeights', gen: this.gen });
  }

  /** No member holds the run's state: restore the checkpoint or the last committed state, and say so. */
  private restoreHeld(): void {
    const held = this.held!;
    const lost = Math.max(this.position.step, this.state.lastStep + 1) - held.position.step;
    if (held.origin === 'committed') {
      this.notice(
        'warn',
        `no worker holds the run's state: restored the state committed at step ${held.position.step}`,
        {
          ...held.position,
          stepsRetrained: lost,
        },
      );
    } else {
      this.notice('info', `replicas restored from the checkpoint at step ${held.position.step}`, { ...held.position });
    }
    this.lineage = `${this.runId}:${randomUUID()}`; // the history branches here
    this.broadcastState(float32ToBytes(held.weights), float32ToBytes(held.optimizer), held.position);
  }

  private onWeights(worker: WorkerRecord, m: MessageOf<'weights'>): void {
    if (this.finalModel?.offer(m, this.position.step)) return;
    if (this.phase.is('syncing') && worker.rank === this.syncFrom) return this.onSyncWeights(worker, m);
    if (this.phase.is('training') && this.checkpointAsked && worker.rank === 0) {
      this.checkpointAsked = false;
      const pos = this.plan ? positionAt(this.plan, m.step) : this.position;
      return this.commit(pos, m.weights, m.optimizer, true);
    }
    worker.log.debug({ step: m.step }, 'weights nobody asked for; dropped');
  }

  private onSyncWeights(worker: WorkerRecord, m: MessageOf<'weights'>): void {
    this.syncFrom = undefined;
    const r = worker.ready!;
    let pos: Position;
    if (r.hasState && r.lineage === this.lineage) {
      pos = this.settled({ epoch: r.epoch, consumed: r.consumed, step: m.step });
      if (this.gen > 1 || this.d.resume)
        this.notice('info', `replicas restored from rank ${worker.rank}, the most advanced survivor`, { ...pos });
    } else {
      pos = { epoch: 0, consumed: 0, step: 0 }; // a fresh run: rank 0's initial weights
      this.lineage = `${this.runId}:${randomUUID()}`;
    }
    this.commit(pos, m.weights, m.optimizer, false);
    this.broadcastState(m.weights, m.optimizer, pos);
  }

  /** A replica at the end of an epoch whose outcome is already recorded stands at the start of the next one. */
  private settled(pos: Position): Position {
    const finished = this.state.history.some((h) => h.epoch === pos.epoch + 1);
    return pos.consumed >= this.d.data.train.count && finished
      ? { epoch: pos.epoch + 1, consumed: 0, step: pos.step }
      : pos;
  }

  /** Keep the state as the one to fall back on; with `save`, write it as a checkpoint too. */
  private commit(pos: Position, weights: Uint8Array, optimizer: Uint8Array, save: boolean): void {
    const w = bytesToFloat32(weights).slice();
    const o = bytesToFloat32(optimizer).slice();
    this.held = { position: pos, weights: w, optimizer: o, lineage: this.lineage, origin: 'committed' };
    if (save) void this.saveCheckpoint(pos, w, o);
  }

  private broadcastState(weights: Uint8Array, optimizer: Uint8Array, pos: Position): void {
    this.position = pos;
    this.state.newGeneration(this.members.length, pos.step);
    this.keepLate(this.late.started(pos.step));
    for (const w of this.members) {
      w.link.send({
        type: 'start',
        gen: this.gen,
        epoch: pos.epoch,
        step: pos.step,
        consumed: pos.consumed,
        lineage: this.lineage,
        weights,
        optimizer,
      });
    }
    this.startPlan(pos);
  }

  private startPlan(pos: Position): void {
    const n = this.members.length;
    const epochSamples = this.d.data.train.count;
    this.plan = planFrom(pos, epochSamples, n, this.d.train.batchSize);
    this.phase.to('training');
    for (const w of this.members) {
      const request = { gen: this.gen, plan: this.plan, rank: w.rank, seed: this.d.train.seed, hasData: w.hasData };
      w.link.send(planShard(this.d.data, request));
    }
    this.emit({
      kind: 'epochStarted',
      epoch: pos.epoch,
      epochs: this.d.train.epochs,
      samples: epochSamples - this.plan.offset,
      offset: this.plan.offset,
      firstStep: pos.step,
      steps: this.plan.steps,
      worldSize: n,
    });
  }

  private onMetrics(worker: WorkerRecord, msg: MessageOf<'metrics'>): void {
    const before = this.state.lastStep;
    const mismatched = this.state.addRecords(worker.rank, msg.records);
    if (this.state.lastStep > before) this.stuckRings = 0;
    this.emit({ kind: 'steps', gen: msg.gen, rank: worker.rank, records: msg.records });
    if (mismatched.length > 0) this.notice('error', 'replica parameters differ between workers', { steps: mismatched });
    if (this.d.opts.checkpointEvery > 0 && this.state.lastStep + 1 >= this.nextCheckpointStep) this.requestCheckpoint();
  }

  /** Reports of the replaced generation's committed steps (late-records.ts): counted and recorded, never judged. */
  private keepLate(reports: Array<MessageOf<'metrics'>>): void {
    for (const r of reports) {
      this.state.addRecords(r.rank, r.records, { late: true });
      this.emit({ kind: 'steps', gen: r.gen, rank: r.rank, records: r.records });
    }
  }

  private requestCheckpoint(): void {
    if (this.checkpointAsked || !this.phase.is('training') || !this.members[0]) return;
    this.checkpointAsked = true;
    this.members[0].link.send({ type: 'requestWeights', gen: this.gen });
  }

  private async saveCheckpoint(pos: Position, weights: Float32Array, optimizer: Float32Array): Promise<void> {
    this.nextCheckpointStep = pos.step + Math.max(1, this.d.opts.checkpointEvery);
    try {
      const meta = {
        runId: this.runId,
        step: pos.step,
        epoch: pos.epoch,
        consumed: pos.consumed,
        generation: this.gen,
        config: { ...this.d.train },
        extra: { history: this.state.history, totalSamples: this.state.totalSamples, lineage: this.lineage },
      };
      const file = await this.d.checkpoints.save(meta, weights, optimizer);
      this.notice('info', `checkpoint at step ${pos.step}`, { file, ...pos });
    } catch (err) {
      this.notice('error', 'checkpoint failed', { error: (err as Error).message, code: (err as ProtocolError).code });
    }
  }

  private maybeFinishEpoch(epoch: number): void {
    if (!this.phase.is('training') || !this.plan || epoch !== this.plan.epoch || !this.state.epochComplete(epoch))
      return;
    const outcome = this.state.finishEpoch(epoch);
    this.emit({ kind: 'epochFinished', outcome });
    this.position = { epoch: epoch + 1, consumed: 0, step: this.plan.firstStep + this.plan.steps };
    const target = this.d.train.targetAccuracy;
    if (target > 0 && outcome.testAccuracy >= target) return this.endTraining(`target accuracy ${target} reached`);
    if (epoch + 1 >= this.d.train.epochs) return this.endTraining('all epochs done');
    this.startPlan(this.position);
    this.requestCheckpoint(); // answered at rank 0's next step boundary, at the start of the new epoch
  }

  /** Training is done: keep rank 0's final weights as the saved model, then end the run. */
  private endTraining(reason: string): void {
    if (!this.d.model || !this.members[0]) return this.finish('finished', reason);
    const accuracy = this.state.history.at(-1)?.testAccuracy;
    const say = (line: string) => this.notice('info', line);
    this.finalModel = new FinalModelFetch(this.d.model, this.members[0].link, this.gen, this.log, say);
    void this.finalModel.fetch(accuracy).then((note) => this.finish('finished', reason + note));
  }

  private onStall(worker: WorkerRecord, m: MessageOf<'stall'>): void {
    this.notice(
      'warn',
      `rank ${worker.rank} waited ${(m.waitingMs / 1000).toFixed(0)} s for rank ${m.peerRank} at step ${m.step}`,
      { rank: worker.rank, step: m.step, waitingMs: m.waitingMs, peerRank: m.peerRank },
    );
    this.stalls.report(worker.rank, m);
    const abortMs = this.d.opts.stallAbortMs;
    if (!this.phase.is('training') || abortMs <= 0 || m.waitingMs < abortMs || this.stallJudge) return;
    // The ranks waited on report at their own thresholds: a moment, so a rank itself waiting is not blamed.
    const gen = this.gen;
    this.stallJudge = setTimeout(
      () => {
        this.stallJudge = undefined;
        if (this.gen === gen) this.judgeStalls();
      },
      this.d.opts.stallGraceMs ?? 2 * this.d.opts.heartbeatMs,
    );
    this.stallJudge.unref();
  }

  private judgeStalls(): void {
    if (!this.phase.is('training')) return;
    const verdict = this.stalls.verdict(this.members.length, this.d.opts.stallAbortMs);
    if (verdict.kind === 'culprit') {
      const w = this.members[verdict.rank];
      if (w) this.evict(w, `the ring waited ${verdict.waitingMs} ms on it at step ${verdict.step}`);
    } else if (verdict.kind === 'allStalled') {
      this.onStuckRing(verdict.waitingMs);
    }
  }

  /** Every rank waits on another: rebuild the ring once (fresh links, state from the most advanced); then give up. */
  private onStuckRing(waitingMs: number): void {
    if (++this.stuckRings > 1)
      return this.finish('failed', `every rank stalled for ${waitingMs} ms again after the ring was re-formed`);
    this.reform(`every rank stalled for ${waitingMs} ms`);
  }

  private checkHeartbeats(): void {
    const limit = this.d.opts.heartbeatMs * this.d.opts.heartbeatMisses;
    const now = Date.now();
    for (const w of this.workers)
      if (!w.evicted && now - w.lastSeen > limit) this.evict(w, `no heartbeat for ${now - w.lastSeen} ms`);
  }

  private evict(w: WorkerRecord, reason: string): void {
    this.notice('warn', `evicting worker rank ${w.rank} (${w.host}): ${reason}`, { rank: w.rank, workerId: w.id });
    w.evicted = true; // once; its link's close re-forms the ring
    this.linger.evicted(w.id);
    w.link.close(CLOSE_CODES.evicted, 'evicted');
  }

  private onClose(worker: WorkerRecord, closed: LinkClosed): void {
    if (!this.workers.delete(worker)) return;
    this.linger.linkClosed();
    const member = this.members.includes(worker);
    const ended = this.phase.is('ended');
    this.emit({
      kind: 'workerLeft',
      worker: this.view(worker, ended ? 'stopped' : 'lost'),
      reason: closed.reason || `close code ${closed.code}`,
    });
    if (ended || !member) return;
    this.members = this.members.filter((w) => w !== worker);
    this.reform(`lost rank ${worker.rank}`);
  }

  /** End the run once: stop every worker, publish the summary, resolve `done` (even if an observer throws). */
  finish(outcome: ClusterSummary['outcome'], reason: string): void {
    if (this.phase.is('ended')) return;
    this.phase.to('ended');
    try {
      for (const t of [...this.timers, this.formingTimer, this.stallJudge]) clearTimeout(t);
      for (const w of this.workers) w.link.send({ type: 'stop', reason, exitCode: exitCodeOfOutcome(outcome) });
      this.summary = this.buildSummary(outcome, reason);
      this.emit({ kind: 'runEnded', summary: this.summary });
    } finally {
      this.summary ??= this.buildSummary(outcome, reason);
      this.resolveDone(this.summary);
    }
  }

  /** After the end: resolves once every worker has been told (linger.ts), within --linger-ms; `cut` ends it now. */
  lingerAfterEnd(cut = false): Promise<void> {
    if (cut) this.linger.cut();
    return this.linger.settle(() => this.workers.size, this.d.opts.lingerMs);
  }

  private buildSummary(outcome: ClusterSummary['outcome'], reason: string): ClusterSummary {
    const backends = [...new Set(this.members.map((w) => w.backend))];
    const run = { runId: this.runId, model: this.d.train.model, gen: this.gen, position: this.position };
    return summarize(
      this.state,
      { ...run, backends, workers: this.members.length, started: this.started },
      outcome,
      reason,
    );
  }

  status(): { runId: string; phase: RunPhase; generation: number; position: Position; workers: number } {
    const { runId, gen: generation, position } = this;
    return { runId, phase: this.phase.phase, generation, position, workers: this.workers.size };
  }
}
