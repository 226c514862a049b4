/**
 * RUN_DIR/report.html: the dashboard page of a run as one file that opens offline, to send or archive. The page's
 * own script and style, uPlot's, and the run's final snapshot (as JSON in a <script type="application/json">) are
 * inlined; the page sees the embedded data, renders it, and never connects anywhere. The "try the model" panel and
 * the side-by-side view are left out (they need the server).
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import type { RunObserver } from '../events.js';
import { pageDir } from './server.js';
import type { DashboardSnapshot } from './views.js';
import type { DashboardState } from './state.js';

const REPORT_FILE = 'report.html';

/** JSON that is safe inside a <script> element: no `</script>`, no `<!--`. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

/** Text safe inside <script> or <style>: a closing tag in a library's source cannot end the element early. */
function inlineSafe(text: string, tag: 'script' | 'style'): string {
  return text.replace(new RegExp(`</${tag}`, 'gi'), `<\\/${tag}`);
}

function renderReport(snapshot: DashboardSnapshot): string {
  const dir = pageDir();
  const require = createRequire(import.meta.url);
  const read = (file: string): string => fs.readFileSync(file, 'utf8');
  const style = (file: string): string => `<style>\n${inlineSafe(read(file), 'style')}\n</style>`;
  const script = (file: string): string => `<script>\n${inlineSafe(read(file), 'script')}\n</script>`;
  let html = read(path.join(dir, 'index.html'));
  const swaps: [RegExp, string][] = [
    [/<link rel="stylesheet" href="\/vendor\/uplot.css" \/>/, style(require.resolve('uplot/dist/uPlot.min.css'))],
    [/<link rel="stylesheet" href="\/app.css" \/>/, style(path.join(dir, 'app.css'))],
    [/<script src="\/vendor\/uplot.js" defer><\/script>/, ''],
    [/<script src="\/app.js" defer><\/script>/, ''],
    [/<script src="\/runs.js" defer><\/script>/, ''],
    [/<script src="\/try-model.js" defer><\/script>/, ''],
  ];
  for (const [pattern, replacement] of swaps) html = html.replace(pattern, () => replacement);
  // The data first, then the scripts at the end of <body>, where the page they draw into already exists.
  const tail =
    `<script type="application/json" id="ringtrain-data">${scriptJson(snapshot)}</script>\n` +
    `${script(require.resolve('uplot/dist/uPlot.iife.min.js'))}\n${script(path.join(dir, 'app.js'))}\n`;
  return html.replace('</body>', () => `${tail}</body>`);
}

/** Write the report of `state` into `runDir` (atomically: a reader never sees half a file). */
function writeReport(runDir: string, state: DashboardState): string {
  const file = path.join(runDir, REPORT_FILE);
  fs.mkdirSync(runDir, { recursive: true });
  fs.writeFileSync(`${file}.tmp`, renderReport(state.snapshot()));
  fs.renameSync(`${file}.tmp`, file);
  return file;
}

/**
 * An observer that writes the report when the run ends, and again as the workers leave after it (so the report
 * shows them stopped); `onError` hears about a report that could not be written.
 */
export function reportOnRunEnd(runDir: string, state: DashboardState, onError: (err: unknown) => void): RunObserver {
  let ended = false;
  return (event) => {
    if (event.kind === 'runEnded') ended = true;
    else if (!(ended && event.kind === 'workerLeft')) return;
    try {
      writeReport(runDir, state);
    } catch (err) {
      onError(err);
    }
  };
}
