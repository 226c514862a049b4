/** The worker session's phases, their transitions, and the phases in which each coordinator message is accepted. */
import type { Transitions } from '../shared/phases.js';
import type { CoordinatorToWorkerMessage } from '../shared/wire/protocol.js';

export type WorkerPhase = 'connecting' | 'joined' | 'forming' | 'ready' | 'synced' | 'training' | 'idle' | 'stopped';

const LIVE: readonly WorkerPhase[] = ['joined', 'forming', 'ready', 'synced', 'training', 'idle'];

export const WORKER_PHASES: Transitions<WorkerPhase> = {
  connecting: ['connecting', 'joined', 'stopped'],
  joined: ['forming', 'connecting', 'stopped'],
  // forming -> idle: the ring could not be set up; the coordinator re-forms it
  forming: ['forming', 'ready', 'idle', 'connecting', 'stopped'],
  ready: ['forming', 'synced', 'connecting', 'stopped'],
  synced: ['training', 'forming', 'connecting', 'stopped'],
  training: ['idle', 'forming', 'connecting', 'stopped'],
  idle: ['idle', 'training', 'forming', 'connecting', 'stopped'],
  stopped: [],
};

/** The phases in which each coordinator message is accepted; anything else is a protocol error. */
export const ACCEPTS: { readonly [T in CoordinatorToWorkerMessage['type']]: readonly WorkerPhase[] } = {
  welcome: ['connecting'],
  assign: LIVE,
  requestWeights: ['ready', 'synced', 'training', 'idle'],
  start: ['ready'],
  shard: ['synced', 'training', 'idle'],
  stop: ['connecting', ...LIVE],
};
