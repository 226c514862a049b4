/**
 * `ringtrain dashboard --run-dir D`: the dashboard of a run from its folder alone (RUN_DIR/events.jsonl, and
 * RUN_DIR/model/ for the "try the model" panel). A finished run shows as it ended; a run still going elsewhere is
 * followed as its file grows. Several --run-dir options, or a folder of run folders, give the runs side by side.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { createMetrics } from '../../coordinator/dashboard/metrics.js';
import { isLegacyRunDir, replayLegacyRun } from '../../coordinator/dashboard/legacy-run.js';
import { hasEventsFile, readRunEvents, runModelSource, type RunReader } from '../../coordinator/dashboard/run-files.js';
import type { RunObserver } from '../../coordinator/events.js';
import { DASHBOARD_DEFAULTS, startDashboard, type DashboardRun } from '../../coordinator/dashboard/server.js';
import { DashboardState } from '../../coordinator/dashboard/state.js';
import { TimelineBuffer } from '../../coordinator/timeline.js';
import { ConfigError } from '../../shared/errors.js';
import { intOption } from '../../shared/cli/options.js';
import { createRootLogger } from '../../shared/log.js';

const isRunDir = (dir: string): boolean => hasEventsFile(dir) || isLegacyRunDir(dir);

/** A run folder's events: its events.jsonl (followed), or what an older folder's log and metrics say (read once). */
function readRun(dir: string, observe: RunObserver, follow: boolean): RunReader {
  if (hasEventsFile(dir)) return readRunEvents(dir, observe, { follow });
  const events = replayLegacyRun(dir, observe);
  return { skipped: 0, events, close() {} };
}

/** The run folders named: each --run-dir that holds a run, or the run folders inside one that does not. */
function findRunDirs(given: string[]): string[] {
  const dirs: string[] = [];
  for (const dir of given) {
    if (isRunDir(dir)) {
      dirs.push(dir);
      continue;
    }
    let inside: string[];
    try {
      inside = fs
        .readdirSync(dir, { withFileTypes: true })
        .filter((e) => e.isDirectory() && isRunDir(path.join(dir, e.name)))
        .map((e) => path.join(dir, e.name))
        .sort();
    } catch (err) {
      throw new ConfigError(`--run-dir ${dir}: ${(err as Error).message}`, { cause: err });
    }
    if (inside.length === 0)
      throw new ConfigError(`--run-dir ${dir}: no run here (no events.jsonl or metrics.jsonl, nor run folders)`);
    dirs.push(...inside);
  }
  return dirs;
}

/** Distinct names for the runs: the folder names, made unique with a number. */
function runNames(dirs: string[]): string[] {
  const seen = new Map<string, number>();
  return dirs.map((d) => {
    const base = path.basename(path.resolve(d)) || 'run';
    const n = (seen.get(base) ?? 0) + 1;
    seen.set(base, n);
    return n === 1 ? base : `${base}-${n}`;
  });
}

export interface FolderDashboard {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Serve the runs of `dirs`; the /metrics of the first. */
export async function serveRunDirs(opts: {
  dirs: string[];
  host: string;
  port: number;
  follow?: boolean;
  log: ReturnType<typeof createRootLogger>;
}): Promise<FolderDashboard> {
  const dirs = findRunDirs(opts.dirs);
  const names = runNames(dirs);
  const metrics = createMetrics({ processMetrics: false });
  const readers: RunReader[] = [];
  const runs: DashboardRun[] = dirs.map((dir, i) => {
    const state = new DashboardState();
    const timeline = new TimelineBuffer();
    const first = i === 0;
    readers.push(
      readRun(
        dir,
        (event, at) => {
          state.observe(event, at);
          timeline.observe(event, at);
          if (first) metrics.observe(event, at);
        },
        opts.follow ?? true,
      ),
    );
    return { name: names[i]!, state, timeline: () => timeline.json(), model: runModelSource(dir) };
  });
  const handle = await startDashboard({ host: opts.host, port: opts.port, runs, metrics, log: opts.log });
  return {
    url: handle.url,
    port: handle.port,
    async close() {
      for (const r of readers) r.close();
      await handle.close();
    },
  };
}

export function dashboardCommand(): Command {
  return new Command('dashboard')
    .description('the dashboard of finished (or running) runs, from their run folders')
    .requiredOption(
      '--run-dir <dir>',
      'a run folder, or a folder of run folders; repeat for several runs side by side',
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .option('--host <host>', 'address to listen on', DASHBOARD_DEFAULTS.host)
    .option('--port <port>', 'port to listen on (0 = any free port)', intOption('--port'), DASHBOARD_DEFAULTS.port)
    .option('--no-follow', 'read the files once instead of following runs still going')
    .action(async (opts: { runDir: string[]; host: string; port: number; follow: boolean }) => {
      const log = createRootLogger({ consoleLevel: 'warn' }).child({ role: 'dashboard' });
      const served = await serveRunDirs({
        dirs: opts.runDir,
        host: opts.host,
        port: opts.port,
        follow: opts.follow,
        log,
      });
      process.stdout.write(`dashboard ${served.url}\n`);
      const stop = (): void => void served.close().then(() => process.exit(0));
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
}
