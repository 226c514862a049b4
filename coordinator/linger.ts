/**
 * After a run ends the coordinator stays reachable for a while, so that no worker is left guessing. Members close
 * their links once they have the `stop`; a worker evicted as unresponsive (a stopped process, a partitioned host)
 * that dials back is told `runEnded` and exits, instead of retrying a coordinator that is gone for
 * --coordinator-retry-ms and ending with an error. The wait ends as soon as nobody is outstanding.
 */
export class EndLinger {
  private readonly away = new Set<string>();
  private wake?: () => void;

  /** A worker was evicted: it may come back. */
  evicted(workerId: string): void {
    this.away.add(workerId);
  }

  /** A worker dialled in (any hello): it is no longer out of touch. */
  returned(workerId: string): void {
    if (this.away.delete(workerId)) this.wake?.();
  }

  /** A control link closed. */
  linkClosed(): void {
    this.wake?.();
  }

  /**
   * Resolves once no link is open (`openLinks` counts them) and no evicted worker is outstanding, after `ms` at the
   * latest, or at once after `cut()`.
   */
  settle(openLinks: () => number, ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.cutShort) return resolve();
      const timer = setTimeout(() => this.finish?.(), ms);
      this.finish = () => {
        clearTimeout(timer);
        this.finish = this.wake = undefined;
        resolve();
      };
      this.wake = () => {
        if (openLinks() === 0 && this.away.size === 0) this.finish?.();
      };
      this.wake();
    });
  }

  /** Stop waiting now (the coordinator is being closed). */
  cut(): void {
    this.cutShort = true;
    this.finish?.();
  }

  private cutShort = false;
  private finish?: () => void;
}
