/**
 * Terminal progress for people: a live bar with samples/s and ETA on a TTY, plain lines otherwise (CI logs, pipes).
 * Machines read the JSON logs instead; this module never writes to them.
 */
import cliProgress from 'cli-progress';

export interface ProgressView {
  /** Start a phase (an epoch) of `total` units. */
  begin(label: string, total: number): void;
  /** `done` units of the current phase finished; `fields` are shown next to the bar. */
  update(done: number, fields: Record<string, string | number>): void;
  /** A line that stays (epoch results, events). */
  line(text: string): void;
  stop(): void;
}

function formatFields(fields: Record<string, string | number>): string {
  return Object.entries(fields)
    .map(([k, v]) => `${k} ${typeof v === 'number' ? round(v) : v}`)
    .join('  ');
}

function round(v: number): string {
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(4);
}

function ttyView(stream: NodeJS.WriteStream): ProgressView {
  const bar = new cliProgress.SingleBar({
    stream,
    format: '{label} [{bar}] {percentage}% {value}/{total} | {rate} samples/s | ETA {eta_formatted} | {extra}',
    barsize: 24,
    hideCursor: true,
    clearOnComplete: true,
    etaBuffer: 50,
  });
  let active = false;
  let started = 0;
  return {
    begin(label, total) {
      if (active) bar.stop();
      bar.start(total, 0, { label, rate: 0, extra: '' });
      active = true;
      started = performance.now();
    },
    update(done, fields) {
      const rate = done / Math.max(1e-3, (performance.now() - started) / 1000);
      bar.update(done, { rate: rate.toFixed(0), extra: formatFields(fields) });
    },
    line(text) {
      if (active) {
        bar.stop();
        active = false;
      }
      stream.write(`${text}\n`);
    },
    stop() {
      if (active) bar.stop();
      active = false;
    },
  };
}

/** Plain lines at most every `everyMs` (and at 100%), for logs. */
function plainView(stream: NodeJS.WritableStream, everyMs: number): ProgressView {
  let label = '';
  let total = 0;
  let started = 0;
  let lastPrint = 0;
  return {
    begin(l, t) {
      label = l;
      total = t;
      started = performance.now();
      lastPrint = started;
    },
    update(done, fields) {
      const now = performance.now();
      if (now - lastPrint < everyMs && done < total) return;
      lastPrint = now;
      const secs = (now - started) / 1000;
      const rate = done / Math.max(1e-3, secs);
      const eta = rate > 0 ? (total - done) / rate : 0;
      stream.write(
        `${label} ${done}/${total} (${((100 * done) / Math.max(1, total)).toFixed(0)}%) ${rate.toFixed(0)} samples/s ETA ${eta.toFixed(0)}s ${formatFields(fields)}\n`,
      );
    },
    line(text) {
      stream.write(`${text}\n`);
    },
    stop() {},
  };
}

export function createProgressView(
  opts: { stream?: NodeJS.WriteStream; quiet?: boolean; everyMs?: number } = {},
): ProgressView {
  const stream = opts.stream ?? process.stdout;
  if (opts.quiet) return { begin() {}, update() {}, line() {}, stop() {} };
  return stream.isTTY ? ttyView(stream) : plainView(stream, opts.everyMs ?? 10_000);
}
