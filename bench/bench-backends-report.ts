/** The backend comparison's targets and Markdown (pure functions of the report's numbers). */
import type { BackendsSection } from './bench-backends.js';

export interface BackendTarget {
  id: string;
  description: string;
  required: string;
  measured: string;
  met: boolean | null;
}

const num = (x: number | undefined, digits = 0): string =>
  x !== undefined && Number.isFinite(x) ? x.toFixed(digits) : 'n/a';
const pct = (x: number | undefined): string =>
  x !== undefined && Number.isFinite(x) ? `${(100 * x).toFixed(0)}%` : 'n/a';

/** The default row of a backend (tensorflow's compiled step, not its op-by-op comparison). */
function lenet(s: BackendsSection, backend: string, opByOp = false) {
  return s.rows.find((r) => r.backend === backend && !!r.opByOp === opByOp)?.models.find((m) => m.model === 'lenet5');
}

function why(s: BackendsSection, backend: string): string {
  const row = s.rows.find((r) => r.backend === backend);
  return row && !row.available ? `${backend} not available: ${row.detail}` : 'n/a';
}

/** The native-backend targets, judged only in a full run. */
export function backendTargets(s: BackendsSection, full: boolean): BackendTarget[] {
  const judge = (ok: boolean) => (full ? ok : null);
  const tf = lenet(s, 'tensorflow');
  const wasm = lenet(s, 'wasm');
  const vsWasm = tf && wasm ? tf.single / wasm.single : NaN;
  const ddp = s.pytorch.samplesPerSec;
  const vsDdp = tf && ddp ? tf.cluster / ddp : NaN;
  const targets: BackendTarget[] = [
    {
      id: 'native-vs-wasm',
      description: 'single-process LeNet-5, tensorflow vs wasm',
      required: '>= 1.40x',
      measured:
        tf && wasm
          ? `${vsWasm.toFixed(2)}x (${num(tf.single)} vs ${num(wasm.single)} samples/s)`
          : why(s, 'tensorflow'),
      met: judge(vsWasm >= 1.4),
    },
    {
      id: 'native-vs-ddp',
      description: '2-worker cluster LeNet-5 on tensorflow vs PyTorch DDP (gloo, same model, batch, threads)',
      required: '>= 1.00x',
      measured:
        tf && ddp
          ? `${vsDdp.toFixed(2)}x (${num(tf.cluster)} vs ${num(ddp)} samples/s)`
          : tf
            ? s.pytorch.note
            : why(s, 'tensorflow'),
      met: judge(vsDdp >= 1.0),
    },
  ];
  for (const backend of ['tensorflow', 'wasm']) {
    const m = lenet(s, backend);
    targets.push({
      id: `ceiling-${backend}`,
      description: `2-worker cluster vs two unconnected trainers side by side, LeNet-5, ${backend}`,
      required: '>= 95%',
      measured: m ? `${pct(m.ofCeiling)} (${num(m.cluster)} vs ${num(m.ceiling)} samples/s)` : why(s, backend),
      met: judge(!!m && m.ofCeiling >= 0.95),
    });
    targets.push({
      id: `phases-${backend}`,
      description: `share of a cluster step's wall time its recorded phases account for, ${backend}`,
      required: '>= 95%',
      measured: m ? pct(m.phaseShare) : why(s, backend),
      met: judge(!!m && m.phaseShare >= 0.95),
    });
  }
  return targets;
}

export function backendsMarkdown(s: BackendsSection): string {
  const head =
    '| backend | model | samples | single | cluster of 2 | ceiling (2 side by side) | cluster / ceiling | phases / step |\n' +
    '|---|---|---:|---:|---:|---:|---:|---:|';
  const rows = s.rows.flatMap((r) =>
    r.available
      ? r.models.map(
          (m) =>
            `| ${r.backend}${r.opByOp ? ' (op by op)' : ''} | ${m.model} | ${m.trainSamples} | ${num(m.single)} | ${num(m.cluster)} | ${num(m.ceiling)} | ${pct(m.ofCeiling)} | ${pct(m.phaseShare)} |`,
        )
      : [`| ${r.backend} | not available: ${r.detail} | | | | | | |`],
  );
  const backends = s.rows
    .filter((r) => !r.opByOp)
    .map(
      (r) => `- ${r.backend}: ${r.detail}; ${r.singleThreads} thread(s) single, ${r.clusterThreads} per cluster worker`,
    );
  const tf = lenet(s, 'tensorflow');
  const before = lenet(s, 'tensorflow', true);
  const graph =
    tf && before
      ? `tensorflow's compiled step (the default) vs op by op (\`--step-graph off\`), LeNet-5: single ${num(tf.single / before.single, 2)}x, cluster ${num(tf.cluster / before.cluster, 2)}x.`
      : '';
  const ddp = s.pytorch.ran
    ? `PyTorch ${s.pytorch.torch} DDP, LeNet-5, ${s.pytorch.trainSamples} samples: **${num(s.pytorch.samplesPerSec)} samples/s** (${s.pytorch.note}; runs ${(s.pytorch.runs ?? []).map((x) => num(x)).join(', ')})` +
      (tf
        ? `; ringtrain's 2-worker cluster on tensorflow is ${num(tf.cluster / s.pytorch.samplesPerSec!, 2)}x that.`
        : '.') +
      (s.pytorch.ceiling
        ? ` PyTorch's own ceiling (two single-process PyTorch trainers side by side, 1 thread each): ${num(s.pytorch.ceiling)} samples/s, so DDP reaches ${pct(s.pytorch.samplesPerSec! / s.pytorch.ceiling)} of it.`
        : '')
    : `PyTorch DDP: ${s.pytorch.note}.`;
  return [
    `Samples/s of training time (evaluation excluded), batch ${s.batchSize} per process, median of ${s.repeats} runs.`,
    '',
    ...backends,
    '',
    head,
    ...rows,
    '',
    ...(graph ? [graph, ''] : []),
    ddp,
  ].join('\n');
}
