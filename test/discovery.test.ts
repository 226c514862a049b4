/**
 * Elastic host discovery: the placement diff (new hosts, vanished hosts, shrinking slots, the cap, excluded hosts),
 * the blacklist and its cool-down, running a discovery script, and the polling loop.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { ConfigError } from '../shared/errors.js';
import { DiscoveryPoller, HostBlacklist, planPlacement, runDiscoveryScript } from '../launcher/discovery.js';
import { parseHostLines, slotName, type WorkerSlot } from '../launcher/hosts.js';
import { tempDir } from './helpers/procs.js';

const none = () => false;
const names = (slots: WorkerSlot[]) => slots.map(slotName);

describe('placement', () => {
  test('a first placement fills every slot in the listed order', () => {
    const p = planPlacement(parseHostLines('a:2\nb:1'), [], { cap: Infinity, excluded: none });
    assert.deepEqual(names(p.start), ['a:0', 'a:1', 'b:0']);
    assert.deepEqual(p.stop, []);
  });

  test('nothing changes when the hosts and the workers agree', () => {
    const hosts = parseHostLines('a:2\nb:1');
    const p = planPlacement(
      hosts,
      [
        { host: 'a', slot: 0 },
        { host: 'b', slot: 0 },
        { host: 'a', slot: 1 },
      ],
      { cap: Infinity, excluded: none },
    );
    assert.deepEqual(p, { start: [], stop: [] });
  });

  test('a new host gets workers; a vanished host has its workers stopped; fewer slots stop the highest ones', () => {
    const running = [
      { host: 'a', slot: 0 },
      { host: 'a', slot: 1 },
      { host: 'a', slot: 2 },
      { host: 'b', slot: 0 },
    ];
    const p = planPlacement(parseHostLines('a:1\nc:2@10.0.0.3'), running, { cap: Infinity, excluded: none });
    assert.deepEqual(names(p.stop).sort(), ['a:1', 'a:2', 'b:0']);
    assert.deepEqual(p.start, [
      { host: 'c', slot: 0, advertise: '10.0.0.3' },
      { host: 'c', slot: 1, advertise: '10.0.0.3' },
    ]);
  });

  test('the cap limits the total; free slots are filled first-listed-first', () => {
    const hosts = parseHostLines('a:2\nb:2\nc:2');
    assert.deepEqual(names(planPlacement(hosts, [], { cap: 3, excluded: none }).start), ['a:0', 'a:1', 'b:0']);
    const p = planPlacement(hosts, [{ host: 'c', slot: 0 }], { cap: 3, excluded: none });
    assert.deepEqual(names(p.start), ['a:0', 'a:1']);
    assert.deepEqual(p.stop, []);
  });

  test('above the cap, the workers furthest down the list stop', () => {
    const hosts = parseHostLines('a:2\nb:2');
    const running = [
      { host: 'b', slot: 1 },
      { host: 'a', slot: 0 },
      { host: 'b', slot: 0 },
      { host: 'a', slot: 1 },
    ];
    const p = planPlacement(hosts, running, { cap: 2, excluded: none });
    assert.deepEqual(names(p.stop), ['b:1', 'b:0']);
    assert.deepEqual(p.start, []);
  });

  test('an excluded (blacklisted) host gets no workers and loses those it has', () => {
    const hosts = parseHostLines('a:1\nbad:2\nc:1');
    const p = planPlacement(hosts, [{ host: 'bad', slot: 0 }], { cap: Infinity, excluded: (h) => h === 'bad' });
    assert.deepEqual(names(p.stop), ['bad:0']);
    assert.deepEqual(names(p.start), ['a:0', 'c:0']);
  });

  test('an empty host list stops everything', () => {
    const p = planPlacement([], [{ host: 'a', slot: 0 }], { cap: Infinity, excluded: none });
    assert.deepEqual(names(p.stop), ['a:0']);
    assert.deepEqual(p.start, []);
  });
});

describe('blacklist', () => {
  test('a host is blacklisted at the failure limit, for the cool-down, which doubles on a repeat up to the cap', () => {
    const b = new HostBlacklist({ failureLimit: 3, cooldownMs: 1000, maxCooldownMs: 3000 });
    assert.equal(b.recordFailure('h', 0), undefined);
    assert.equal(b.recordFailure('h', 10), undefined);
    assert.ok(!b.isBlacklisted('h', 10));
    assert.equal(b.recordFailure('h', 20), 1020);
    assert.ok(b.isBlacklisted('h', 20));
    assert.ok(b.isBlacklisted('h', 1019));
    assert.deepEqual(b.entries(500), [{ host: 'h', until: 1020 }]);
    assert.equal(b.recordFailure('h', 500), undefined, 'failures while blacklisted do not count');
    assert.ok(!b.isBlacklisted('h', 1020), 'back after the cool-down');
    assert.deepEqual(b.entries(1020), []);
    for (const t of [1100, 1200]) assert.equal(b.recordFailure('h', t), undefined);
    assert.equal(b.recordFailure('h', 1300), 1300 + 2000, 'the second blacklisting lasts twice as long');
    for (const t of [3400, 3500]) b.recordFailure('h', t);
    assert.equal(b.recordFailure('h', 3600), 3600 + 3000, 'capped');
    assert.ok(!b.isBlacklisted('other', 3600));
  });

  test('a success resets the failure count; hosts are counted separately', () => {
    const b = new HostBlacklist({ failureLimit: 2, cooldownMs: 1000, maxCooldownMs: 1000 });
    b.recordFailure('h', 0);
    b.recordSuccess('h');
    assert.equal(b.recordFailure('h', 1), undefined);
    b.recordFailure('g', 1);
    assert.equal(b.recordFailure('h', 2), 1002);
    assert.ok(!b.isBlacklisted('g', 2));
  });

  test('a failure limit below one is a configuration error', () => {
    assert.throws(() => new HostBlacklist({ failureLimit: 0, cooldownMs: 1, maxCooldownMs: 1 }), ConfigError);
  });
});

async function script(dir: string, name: string, body: string): Promise<string> {
  const file = path.join(dir, name);
  await fs.writeFile(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return file;
}

describe('discovery script', () => {
  test('its host:slots lines are parsed', async () => {
    const dir = await tempDir('discovery');
    const file = await script(dir, 'hosts.sh', `printf 'h1:2\\n# h2 is down\\nh3:1@10.0.0.3\\n'`);
    assert.deepEqual(await runDiscoveryScript(file, 5000), [
      { host: 'h1', slots: 2 },
      { host: 'h3', slots: 1, advertise: '10.0.0.3' },
    ]);
  });

  test('a failing, hanging or garbled script is an error naming it', async () => {
    const dir = await tempDir('discovery');
    const failing = await script(dir, 'fail.sh', 'echo "inventory unavailable" >&2; exit 3');
    await assert.rejects(
      runDiscoveryScript(failing, 5000),
      (e: unknown) => e instanceof ConfigError && /fail\.sh failed: .*inventory unavailable/.test(e.message),
    );
    const hanging = await script(dir, 'hang.sh', 'exec sleep 30');
    await assert.rejects(runDiscoveryScript(hanging, 200), /hang\.sh failed: timed out after 200 ms/);
    const garbled = await script(dir, 'garbled.sh', 'echo "h1:many"');
    await assert.rejects(runDiscoveryScript(garbled, 5000), /garbled\.sh line 1: slots must be a positive integer/);
    await assert.rejects(runDiscoveryScript(path.join(dir, 'missing.sh'), 5000), /missing\.sh failed/);
  });
});

describe('poller', () => {
  test('polls at once, then an interval after each run; errors are reported and polling goes on; stop() ends it', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const results: Array<string[] | Error> = [['a:1'], new Error('script failed'), ['a:1', 'b:2']];
    let calls = 0;
    const seen: string[][] = [];
    const errors: string[] = [];
    const poller = new DiscoveryPoller({
      intervalMs: 1000,
      discover: async () => {
        const r = results[Math.min(calls++, results.length - 1)]!;
        if (r instanceof Error) throw r;
        return parseHostLines(r.join('\n'));
      },
      onHosts: (hosts) => seen.push(hosts.map((h) => `${h.host}:${h.slots}`)),
      onError: (err) => errors.push((err as Error).message),
    });
    const settle = () => new Promise<void>((resolve) => setImmediate(resolve));
    poller.start();
    await settle();
    assert.equal(calls, 1, 'the first poll runs at once');
    t.mock.timers.tick(999);
    await settle();
    assert.equal(calls, 1, 'not before the interval');
    for (let i = 0; i < 3; i++) {
      t.mock.timers.tick(1000);
      await settle();
    }
    assert.equal(calls, 4);
    assert.deepEqual(seen, [['a:1'], ['a:1', 'b:2'], ['a:1', 'b:2']]);
    assert.deepEqual(errors, ['script failed']);
    poller.stop();
    for (let i = 0; i < 3; i++) {
      t.mock.timers.tick(1000);
      await settle();
    }
    assert.equal(calls, 4, 'a stopped poller runs no more');
  });
});
