/**
 * `ringtrain launch` across hosts, with real network addresses instead of loopback: four Linux network namespaces
 * joined by a bridge (the coordinator and the launcher in the first, one worker in each of the others), workers
 * started with `--launcher-command 'ip netns exec {host} {command}'` in place of ssh. A run trains to the end; then
 * a run has one worker's link cut mid-training and recovers with the other two. Needs root (CI runs as root); the
 * namespace tests are skipped, saying why, only where `ip netns add` is refused.
 *
 * Also elastic host discovery on this machine (no root needed): hosts appear, fail, are blacklisted and vanish while
 * a run trains, through a discovery script the test rewrites.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI, readJsonLines, TEST_TOKEN, tempDir, waitForLines } from './helpers/procs.js';

interface MetricLine {
  rank: number;
  gen: number;
  step: number;
}
interface Summary {
  outcome: string;
  workers: number;
  hashMismatches: number;
  hashChecks: number;
  steps: number;
}

const RUN = `rt-${process.pid}`;
const NS = [0, 1, 2, 3].map((i) => `${RUN}-${i}`);
/** Our own private /24, inside the namespaces only (the host's interfaces never see it). */
const SUBNET = '10.231.7';
const COORDINATOR_IP = `${SUBNET}.1`;
const workerIp = (k: number) => `${SUBNET}.${10 + k}`;
/** The bridge in namespace 0 and each worker namespace's link to it share this name, for --network-interface. */
const IFACE = 'rt0';
const NS_LAUNCHER = 'ip netns exec {host} {command}';
const TRAIN = [
  '--backend',
  'wasm',
  '--model',
  'mlp',
  '--test-limit',
  '500',
  '--batch-size',
  '32',
  '--check-every',
  '1',
  '--report-every',
  '2',
  '--quiet',
];

function ip(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('ip', args, (err, stdout, stderr) =>
      err ? reject(new Error(`ip ${args.join(' ')}: ${stderr.trim() || err.message}`)) : resolve(stdout),
    );
  });
}

/** The bridge and veth links; the namespaces exist already. */
async function wireNamespaces(): Promise<void> {
  for (const ns of NS) await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
  await ip(['-n', NS[0]!, 'link', 'add', IFACE, 'type', 'bridge']);
  await ip(['-n', NS[0]!, 'addr', 'add', `${COORDINATOR_IP}/24`, 'dev', IFACE]);
  await ip(['-n', NS[0]!, 'link', 'set', IFACE, 'up']);
  for (const k of [1, 2, 3]) {
    await ip(['-n', NS[0]!, 'link', 'add', `v${k}`, 'type', 'veth', 'peer', 'name', IFACE, 'netns', NS[k]!]);
    await ip(['-n', NS[0]!, 'link', 'set', `v${k}`, 'master', IFACE]);
    await ip(['-n', NS[0]!, 'link', 'set', `v${k}`, 'up']);
    await ip(['-n', NS[k]!, 'addr', 'add', `${workerIp(k)}/24`, 'dev', IFACE]);
    await ip(['-n', NS[k]!, 'link', 'set', IFACE, 'up']);
  }
}

/** Kill what still runs inside our namespaces (only processes this test started live there), then delete them. */
async function removeNamespaces(created: string[]): Promise<void> {
  for (const ns of created) {
    const pids = (await ip(['netns', 'pids', ns]).catch(() => '')).split(/\s+/).filter(Boolean).map(Number);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
  for (const ns of created) await ip(['netns', 'del', ns]).catch(() => undefined);
}

interface Launch {
  child: ChildProcess;
  output(): string;
  exited(timeoutMs: number): Promise<number | null>;
}

const launches = new Set<ChildProcess>();

/** `ringtrain launch` as its own process group (so cleanup reaches the coordinator too), optionally inside a namespace. */
function startLaunch(args: string[], netns?: string): Launch {
  const command = netns ? 'ip' : process.execPath;
  const argv = netns ? ['netns', 'exec', netns, process.execPath, CLI, 'launch', ...args] : [CLI, 'launch', ...args];
  // The workers' script runs `node` from PATH: make it this node.
  const env = {
    ...process.env,
    RINGTRAIN_TOKEN: TEST_TOKEN,
    PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}`,
  };
  const child = spawn(command, argv, { stdio: ['ignore', 'pipe', 'pipe'], env, detached: true });
  launches.add(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exit = new Promise<number | null>((resolve) =>
    child.once('close', (code) => {
      launches.delete(child);
      resolve(code);
    }),
  );
  return {
    child,
    output: () => out,
    exited: (timeoutMs) =>
      Promise.race([
        exit,
        new Promise<never>((_, reject) =>
          setTimeout(
            () => reject(new Error(`launch did not exit in ${timeoutMs} ms; output:\n${out}`)),
            timeoutMs,
          ).unref(),
        ),
      ]),
  };
}

function killLaunches(): void {
  for (const c of launches) {
    try {
      process.kill(-c.pid!, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  launches.clear();
}

async function readSummary(file: string): Promise<Summary> {
  return JSON.parse(await fs.readFile(file, 'utf8')) as Summary;
}

function count(text: string, needle: string): number {
  return text.split(needle).length - 1;
}

describe(
  'launch -H across network namespaces (real addresses, ip netns exec instead of ssh)',
  { timeout: 180_000 },
  () => {
    let skipReason: string | undefined;
    const created: string[] = [];
    const hostList = `${NS[1]}:1@${workerIp(1)},${NS[2]}:1@${workerIp(2)},${NS[3]}:1`;

    before(async () => {
      try {
        await ip(['netns', 'add', NS[0]!]);
      } catch (err) {
        skipReason = `network namespaces cannot be created here (needs root and iproute2): ${(err as Error).message}`;
        return;
      }
      created.push(NS[0]!);
      for (const ns of NS.slice(1)) {
        await ip(['netns', 'add', ns]);
        created.push(ns);
      }
      await wireNamespaces();
    });

    after(async () => {
      killLaunches();
      await removeNamespaces(created);
    });

    test('3 workers on 3 addresses train to the end; the coordinator is dialed at its interface address', async (t) => {
      if (skipReason) return t.skip(skipReason);
      const dir = await tempDir('multihost');
      const summary = path.join(dir, 'summary.json');
      // ns3's worker has no @address: it looks up its own address on the 'rt0' interface inside its namespace.
      const launch = startLaunch(
        [
          '-H',
          hostList,
          '--network-interface',
          IFACE,
          '--launcher-command',
          NS_LAUNCHER,
          ...TRAIN,
          '--train-limit',
          '1536',
          '--epochs',
          '2',
          '--run-dir',
          dir,
          '--remote-run-dir',
          path.join(dir, 'workers'),
          '--summary-json',
          summary,
        ],
        NS[0],
      );
      assert.equal(await launch.exited(90_000), 0, launch.output());
      const s = await readSummary(summary);
      assert.equal(s.outcome, 'finished');
      assert.equal(s.workers, 3);
      assert.equal(s.hashMismatches, 0);
      assert.equal(s.steps, 32, '1536 samples / 3 workers / batch 32 = 16 steps per epoch, 2 epochs');
      assert.ok(s.hashChecks >= 30, `hash checks ${s.hashChecks}`);
      assert.match(launch.output(), new RegExp(`coordinator ws://${COORDINATOR_IP.replace(/\./g, '\\.')}:\\d+`));
      for (const k of [1, 2, 3]) assert.match(launch.output(), new RegExp(`started worker ${NS[k]}:0`));
      const logs = (await fs.readdir(path.join(dir, 'workers'))).sort();
      assert.deepEqual(
        logs,
        [1, 2, 3].map((k) => `worker-${NS[k]}_0.log.jsonl`),
      );
    });

    test("one worker's link cut mid-run: it is evicted, the other two finish, the cut-off worker is torn down", async (t) => {
      if (skipReason) return t.skip(skipReason);
      const dir = await tempDir('multihost-cut');
      const summary = path.join(dir, 'summary.json');
      const launch = startLaunch(
        [
          '-H',
          hostList,
          '--network-interface',
          IFACE,
          '--launcher-command',
          NS_LAUNCHER,
          ...TRAIN,
          '--min-workers',
          '2',
          '--heartbeat-ms',
          '300',
          '--heartbeat-misses',
          '5',
          '--shutdown-grace-ms',
          '2000',
          '--train-limit',
          '6000',
          '--epochs',
          '3',
          '--run-dir',
          dir,
          '--summary-json',
          summary,
        ],
        NS[0],
      );
      const metrics = path.join(dir, 'metrics.jsonl');
      // Training may start with two workers; wait for the generation with all three (a rank 2 exists only there).
      const before3 = await waitForLines<MetricLine>(metrics, (ls) => ls.some((l) => l.rank === 2), 60_000);
      const cutGen = Math.max(...before3.filter((l) => l.rank === 2).map((l) => l.gen));
      await ip(['-n', NS[0]!, 'link', 'set', 'v3', 'down']);
      assert.equal(await launch.exited(90_000), 0, launch.output());
      const s = await readSummary(summary);
      assert.equal(s.outcome, 'finished');
      assert.equal(s.workers, 2);
      assert.equal(s.hashMismatches, 0);
      const lines = await readJsonLines<MetricLine>(metrics);
      const later = lines.filter((l) => l.gen > cutGen);
      assert.ok(later.length > 0, `a generation after ${cutGen} trained`);
      assert.deepEqual([...new Set(later.map((l) => l.rank))].sort(), [0, 1], 'the later generation has two ranks');
      const out = launch.output();
      assert.match(
        out,
        new RegExp(`^\\[${NS[3]}:0\\] WARN `, 'm'),
        "the cut-off worker's output streams with its host:slot prefix",
      );
      assert.match(out, new RegExp(`stopping worker ${NS[3]}:0: still running after the coordinator ended`));
      assert.equal((await ip(['netns', 'pids', NS[3]!])).trim(), '', 'nothing is left running on the cut-off host');
    });
  },
);

describe('elastic host discovery (this machine, every host through the launcher command)', { timeout: 180_000 }, () => {
  after(killLaunches);

  test('hosts join, a failing host is blacklisted, a vanished host loses its worker, and the run finishes', async () => {
    const dir = await tempDir('discovery-run');
    const hostsFile = path.join(dir, 'hosts.txt');
    const script = path.join(dir, 'discover.sh');
    await fs.writeFile(script, `#!/bin/sh\nexec cat ${JSON.stringify(hostsFile)}\n`, { mode: 0o755 });
    // Written aside and renamed into place, so the script never reads a half-written list.
    const setHosts = async (names: string[]) => {
      await fs.writeFile(`${hostsFile}.new`, names.map((n) => `${n}:1@127.0.0.1\n`).join(''));
      await fs.rename(`${hostsFile}.new`, hostsFile);
    };
    await setHosts(['h1', 'bad', 'h2']);
    const summary = path.join(dir, 'summary.json');
    // Every host is this machine; the host named 'bad' cannot be reached (its transport fails at once).
    const launch = startLaunch([
      '--host-discovery-script',
      script,
      '--discovery-interval-ms',
      '200',
      '--host-failure-limit',
      '2',
      '--launcher-command',
      `[ {host} != bad ] && {command}`,
      '--coordinator-address',
      '127.0.0.1',
      '--min-workers',
      '2',
      '--max-workers',
      '3',
      ...TRAIN,
      '--train-limit',
      '6000',
      '--epochs',
      '3',
      '--shutdown-grace-ms',
      '2000',
      '--run-dir',
      dir,
      '--summary-json',
      summary,
    ]);
    const metrics = path.join(dir, 'metrics.jsonl');
    await waitForLines<MetricLine>(metrics, (ls) => ls.length > 4, 60_000);
    assert.match(launch.output(), /host bad blacklisted until/);
    await setHosts(['h1', 'bad', 'h2', 'h3']);
    const three = await waitForLines<MetricLine>(metrics, (ls) => ls.some((l) => l.rank === 2), 60_000);
    const gen3 = Math.max(...three.filter((l) => l.rank === 2).map((l) => l.gen));
    await setHosts(['h2', 'h3']);
    assert.equal(await launch.exited(90_000), 0, launch.output());
    const s = await readSummary(summary);
    assert.equal(s.outcome, 'finished');
    assert.equal(s.workers, 2);
    assert.equal(s.hashMismatches, 0);
    const out = launch.output();
    assert.equal(
      count(out, 'started worker bad:0'),
      2,
      'the failing host was tried up to the failure limit, then left alone',
    );
    assert.equal(count(out, 'started worker h3:0'), 1, out);
    assert.match(out, /stopping worker h1:0: its host left the host list/);
    const lines = await readJsonLines<MetricLine>(metrics);
    assert.ok(
      lines.some((l) => l.gen > gen3),
      'a generation after h1 left trained',
    );
  });
});
