/**
 * Bounded chart series for the dashboard: a run of any length stays on the chart at a uniform resolution.
 */
import { ConfigError } from '../../shared/errors.js';

// ---------------------------------------------------------------------------------------------
// Bounded chart series

export interface SeriesCursor {
  /** Which series the cursor belongs to (a new run starts new series). */
  series: number;
  /** How many times the series had been compacted when the cursor was taken. */
  compactions: number;
  /** How many points had been appended when the cursor was taken. */
  appended: number;
}

export interface SeriesDelta {
  /** True: `x`/`y` are the whole series and replace what the reader has. */
  reset: boolean;
  x: number[];
  y: number[];
}

/**
 * An (x, y) series with at most `cap` points. When full it halves itself by averaging neighbour pairs and from then
 * on averages every `stride` incoming points into one, so the whole run stays on the chart at a uniform resolution.
 * Readers follow it with a cursor; a compaction in between makes `since` return the whole series.
 */
export class Series {
  private static instances = 0;
  private readonly id = ++Series.instances;
  private xs: number[] = [];
  private ys: number[] = [];
  private stride = 1;
  private pending = { x: 0, y: 0, count: 0 };
  private compactions = 0;
  private appended = 0;

  constructor(readonly cap: number) {
    if (!Number.isInteger(cap) || cap < 2) throw new ConfigError(`series cap must be an integer >= 2, got ${cap}`);
  }

  get length(): number {
    return this.xs.length;
  }

  push(x: number, y: number): void {
    const p = this.pending;
    p.x += x;
    p.y += y;
    p.count++;
    if (p.count < this.stride) return;
    this.xs.push(p.x / p.count);
    this.ys.push(p.y / p.count);
    this.appended++;
    this.pending = { x: 0, y: 0, count: 0 };
    // Compact right after a full window, so every point always stands for the same number of pushes.
    if (this.xs.length >= this.cap) this.compact();
  }

  private compact(): void {
    const xs: number[] = [];
    const ys: number[] = [];
    for (let i = 0; i < this.xs.length; i += 2) {
      const pair = i + 1 < this.xs.length ? 2 : 1;
      xs.push((this.xs[i]! + this.xs[i + pair - 1]!) / 2);
      ys.push((this.ys[i]! + this.ys[i + pair - 1]!) / 2);
    }
    this.xs = xs;
    this.ys = ys;
    this.stride *= 2;
    this.compactions++;
  }

  cursor(): SeriesCursor {
    return { series: this.id, compactions: this.compactions, appended: this.appended };
  }

  all(): SeriesDelta {
    return { reset: true, x: [...this.xs], y: [...this.ys] };
  }

  since(cursor: SeriesCursor): SeriesDelta {
    if (cursor.series !== this.id || cursor.compactions !== this.compactions) return this.all();
    const fresh = Math.min(this.xs.length, this.appended - cursor.appended);
    if (fresh <= 0) return { reset: false, x: [], y: [] };
    return { reset: false, x: this.xs.slice(-fresh), y: this.ys.slice(-fresh) };
  }
}
