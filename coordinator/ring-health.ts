/**
 * What the coordinator does when a worker reports a ring link down (the `ringLinkDown` message). While forming, the
 * reporter could not dial its successor within the form timeout (retried with backoff): that peer's ring address is
 * unreachable, so it is evicted, and its address is turned away when it rejoins, so one unreachable joiner cannot
 * stall ring formation again and again. While training, a link between live workers was lost (a reset connection):
 * the ring is re-formed after a heartbeat interval, unless losing a worker re-formed it first.
 */
import { CLOSE_CODES } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import type { MessageOf } from '../shared/wire/protocol.js';

interface Member {
  rank: number;
  ringHost: string;
  ringPort: number;
  log: Logger;
}

export interface RingHealthHooks<W extends Member> {
  members(): W[];
  /** The current generation while training, else -1. */
  gen(): number;
  evict(w: W, reason: string): void;
  reform(reason: string): void;
  heartbeatMs(): number;
}

export class RingHealth<W extends Member> {
  private readonly unreachable = new Set<string>();

  constructor(private readonly hooks: RingHealthHooks<W>) {}

  onLinkDown(reporter: W, m: MessageOf<'ringLinkDown'>): void {
    const peer = this.hooks.members().find((w) => w.rank === m.peerRank);
    reporter.log.warn(
      { peerRank: m.peerRank, during: m.during, attempts: m.attempts, reason: m.reason },
      'ring link down',
    );
    if (!peer || peer === reporter) return;
    if (m.during === 'forming') {
      const address = `${peer.ringHost}:${peer.ringPort}`;
      this.unreachable.add(address);
      return this.hooks.evict(peer, `ring address ${address} unreachable from rank ${reporter.rank}`);
    }
    const timer = setTimeout(() => {
      if (this.hooks.gen() === m.gen) this.hooks.reform(`ring link ${reporter.rank}-${m.peerRank} down`);
    }, this.hooks.heartbeatMs());
    timer.unref();
  }

  /** Turn away a joiner whose ring address was found unreachable; returns whether it was. */
  turnedAway(ws: { close(code: number, reason: string): void }, hello: MessageOf<'hello'>): boolean {
    if (!this.unreachable.has(`${hello.ringHost}:${hello.ringPort}`)) return false;
    ws.close(
      CLOSE_CODES.ringUnreachable,
      `ring address ${hello.ringHost}:${hello.ringPort} unreachable from the other workers`,
    );
    return true;
  }
}
