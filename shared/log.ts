/**
 * One root pino logger per process; everything else gets `root.child({ role, rank, ... })`.
 * Machines read the JSON lines in the run folder (`<runDir>/<name>.log.jsonl`); humans get warnings and errors on
 * stderr as short readable lines (the progress display owns stdout).
 */
import fs from 'node:fs';
import path from 'node:path';
import { pino, type Logger, type DestinationStream, type Level } from 'pino';

export type { Logger } from 'pino';

export interface LoggerOptions {
  /** Minimum level written to the JSON file. */
  level?: Level;
  /** Folder for the JSON log file; no file when absent. */
  runDir?: string;
  /** File name inside runDir, without extension. */
  name?: string;
  /** Minimum level shown on stderr (default 'warn'); 'silent' shows nothing. */
  consoleLevel?: Level | 'silent';
}

/** A stream that turns pino's JSON lines into `LEVEL msg key=value` for a person reading stderr. */
function humanStderr(): DestinationStream {
  const labels: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
  const skip = new Set(['level', 'time', 'pid', 'hostname', 'msg']);
  return {
    write(line: string) {
      try {
        const rec = JSON.parse(line) as Record<string, unknown>;
        const fields = Object.entries(rec)
          .filter(([k]) => !skip.has(k))
          .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
        process.stderr.write(`${labels[rec.level as number] ?? 'LOG'} ${String(rec.msg ?? '')} ${fields.join(' ')}\n`);
      } catch {
        process.stderr.write(line);
      }
    },
  };
}

export function createRootLogger(opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? 'info';
  const consoleLevel = opts.consoleLevel ?? 'warn';
  const streams: { level: Level; stream: DestinationStream }[] = [];
  if (consoleLevel !== 'silent') streams.push({ level: consoleLevel, stream: humanStderr() });
  if (opts.runDir) {
    fs.mkdirSync(opts.runDir, { recursive: true });
    const file = path.join(opts.runDir, `${opts.name ?? 'ringtrain'}.log.jsonl`);
    streams.push({ level, stream: pino.destination({ dest: file, sync: true }) });
  }
  const minLevel = streams.length === 0 ? 'silent' : lowestLevel(streams.map((s) => s.level));
  return pino({ level: minLevel, base: { pid: process.pid } }, pino.multistream(streams));
}

function lowestLevel(levels: Level[]): Level {
  return levels.reduce((a, b) => (pino.levels.values[a]! <= pino.levels.values[b]! ? a : b));
}

/** A logger that discards everything, for tests and library callers that pass none. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
