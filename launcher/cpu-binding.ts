/**
 * Pinning each worker to its share of its host's CPUs (`launch --cpu-binding`, see resolveCpuBinding for the
 * default), as mpirun's `--bind-to core` does for MPI ranks. A synchronous ring runs at its slowest rank's pace every
 * step; on a machine with no idle core, the scheduler moving a worker's threads onto its neighbour's core (or a
 * thread of one worker preempting the other's compute) makes one rank late and the whole ring waits. Measured on 2
 * cores, 2 workers, LeNet-5 on tensorflow, 12 interleaved pairs: pinned 1.01-1.23x unpinned (median 1.12x).
 *
 * The share is worked out on the host that runs the worker (its own CPU count and affinity mask, which may be a
 * cgroup's subset), by the worker script, through `taskset` from util-linux. Where taskset is missing or refuses,
 * the worker runs unpinned and says so on stderr: pinning is an optimisation, never a reason not to train.
 */

/**
 * The CPUs of worker `index` of `count` on a host whose allowed CPUs are `allowed` (Linux list syntax, as in
 * /proc/self/status `Cpus_allowed_list`: `0-3,8-11`): an even, contiguous slice, in list syntax; '' when the
 * workers outnumber the CPUs (no pinning then: sharing is the scheduler's job).
 *
 * Self-contained on purpose: the worker script runs this very function's source with `node -e` on the host.
 */
export function cpuShare(allowed: string, index: number, count: number): string {
  const cpus: number[] = [];
  for (const part of allowed.trim().split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) return '';
    const first = Number(m[1]);
    const last = m[2] === undefined ? first : Number(m[2]);
    for (let c = first; c <= last; c++) cpus.push(c);
  }
  const per = Math.floor(cpus.length / count);
  if (per < 1 || index < 0 || index >= count) return '';
  const mine = cpus.slice(index * per, index * per + per);
  const runs: string[] = [];
  for (let i = 0; i < mine.length;) {
    let j = i;
    while (j + 1 < mine.length && mine[j + 1] === mine[j]! + 1) j++;
    runs.push(i === j ? String(mine[i]) : `${mine[i]}-${mine[j]}`);
    i = j + 1;
  }
  return runs.join(',');
}

/**
 * A `node -e` program printing cpuShare(this process's allowed CPUs, argv[1], argv[2]); it prints nothing where the
 * kernel does not say (not Linux), which leaves the worker unpinned.
 */
export const CPU_SHARE_JS =
  `const cpuShare=${cpuShare.toString()};` +
  'let s="";try{s=(require("fs").readFileSync("/proc/self/status","utf8").match(/^Cpus_allowed_list:\\s*(\\S+)/m)||[])[1]||""}catch{}' +
  'if(s)console.log(cpuShare(s,Number(process.argv[1]),Number(process.argv[2])))';

/**
 * `auto` pins workers on the native backend (whose compute thread and JavaScript thread take turns on one core) and
 * not on wasm or cpu, whose JavaScript thread computes and whose helper threads (the garbage collector's) gain from
 * a free core while the other worker waits: measured on 2 cores, wasm pinned was 0.83-1.22x unpinned, median 0.96x.
 */
export function resolveCpuBinding(mode: 'auto' | 'cpus' | 'none', backend: string): 'cpus' | 'none' {
  if (mode !== 'auto') return mode;
  return backend === 'wasm' || backend === 'cpu' ? 'none' : 'cpus';
}
