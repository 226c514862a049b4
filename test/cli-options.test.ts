/**
 * The option tables: each option declared once, every role's flags distinct, launch forwarding every coordinator
 * and worker option (or setting it itself), the defaults the processes use when started in-process equal to the
 * command line's, and the run config on the wire checked by the command line's validator. Bad options on the real
 * command line end with the message and its code, never a stack trace.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Command } from 'commander';
import { coordinatorCommand } from '../coordinator/cli.js';
import { DASHBOARD_DEFAULTS } from '../coordinator/dashboard/server.js';
import { COORDINATOR_DEFAULTS } from '../coordinator/start.js';
import { launchCommand } from '../launcher/launch.js';
import { BLACKLIST_DEFAULTS } from '../launcher/discovery.js';
import { ADMISSION_DEFAULTS } from '../shared/admission.js';
import { attributeOf, forwardedArgs, readValues } from '../shared/cli/options.js';
import type { AnySpec, Role } from '../shared/cli/spec.js';
import {
  ALL_TABLES,
  COMMON_OPTIONS,
  COORDINATOR_OPTIONS,
  LAUNCH_OPTIONS,
  RUN_OPTIONS,
  TRAIN_OPTIONS,
  WORKER_OPTIONS,
} from '../shared/cli/table.js';
import { RUN_DEFAULTS, TRAIN_DEFAULTS, validateRunConfig } from '../shared/config.js';
import { ConfigError } from '../shared/errors.js';
import { workerCommand } from '../worker/cli.js';
import { WORKER_DEFAULTS } from '../worker/worker.js';
import { runCli } from './helpers/procs.js';
import { parsedBy } from './helpers/cli.js';

const ROLES: Role[] = ['train', 'coordinator', 'worker', 'launch', 'evaluate'];
const specs = (): AnySpec[] => ALL_TABLES.flatMap((t) => Object.values(t) as AnySpec[]);

/** What launch sets for its children itself instead of forwarding (each with its reason). */
const SET_BY_LAUNCH: Record<string, string> = {
  host: 'the coordinator listens on 127.0.0.1 for -np, else on --host',
  port: 'launch picks the port (default any free one) and tells the workers',
  minWorkers: 'from -np or --min-workers, checked against the slots',
  runDir: 'launch makes the run folder and gives the workers their log names in it',
  token: 'through the environment and stdin, never a command line',
  coordinator: "the coordinator's URL, once it listens",
  listen: 'per slot (--worker-port)',
  advertise: 'per host (-H host@address, --network-interface)',
  name: 'per slot',
  // The worker's --max-payload shares its flag with the coordinator's, which is the one launch takes.
  maxPayloadBytes: 'launch takes the coordinator --max-payload; workers keep their default',
  debugDelayMs: 'a test hook for one slow worker; launch never slows all of them',
};

describe('option tables', () => {
  test('no role takes a flag (or a short flag) twice; every forwarded option is one of launch', () => {
    for (const role of ROLES) {
      const mine = specs().filter((s) => s.roles.includes(role));
      const flags = mine.flatMap((s) => [`--${s.flag}`, ...(s.short ? [`-${s.short}`] : [])]);
      assert.equal(new Set(flags).size, flags.length, `${role}: ${flags.join(' ')}`);
    }
    for (const s of specs()) {
      if (s.forward) assert.ok(s.roles.includes('launch'), `--${s.flag} is forwarded, so launch must take it`);
      assert.ok(s.help.length > 0, `--${s.flag} has help`);
      if (s.default !== undefined) s.check(s.default, `--${s.flag}`); // every default passes its own check
    }
  });

  test('launch forwards every option of the coordinator and the workers, or sets it itself', () => {
    for (const [role, table] of [
      ['coordinator', { ...TRAIN_OPTIONS, ...RUN_OPTIONS, ...COORDINATOR_OPTIONS, ...COMMON_OPTIONS }],
      ['worker', { ...WORKER_OPTIONS, ...COMMON_OPTIONS }],
    ] as const) {
      for (const [key, spec] of Object.entries(table) as Array<[string, AnySpec]>) {
        if (!spec.roles.includes(role)) continue;
        const forwarded = spec.forward === role || spec.forward === 'both';
        assert.ok(forwarded || key in SET_BY_LAUNCH, `${role} --${spec.flag}: neither forwarded nor set by launch`);
      }
    }
  });

  test("the in-process defaults equal the command line's", () => {
    const coordinator = readValues(COORDINATOR_OPTIONS, {}, 'coordinator');
    for (const key of Object.keys(COORDINATOR_DEFAULTS) as Array<keyof typeof COORDINATOR_DEFAULTS>) {
      if (key in coordinator)
        assert.equal(coordinator[key as keyof typeof coordinator], COORDINATOR_DEFAULTS[key], key);
      if (key in RUN_DEFAULTS) assert.equal(RUN_DEFAULTS[key as keyof typeof RUN_DEFAULTS], COORDINATOR_DEFAULTS[key]);
    }
    assert.equal(COMMON_OPTIONS.heartbeatMs.default, COORDINATOR_DEFAULTS.heartbeatMs);
    assert.equal(COMMON_OPTIONS.heartbeatMisses.default, COORDINATOR_DEFAULTS.heartbeatMisses);
    assert.equal(COORDINATOR_OPTIONS.authTimeoutMs.default, ADMISSION_DEFAULTS.authTimeoutMs);
    assert.equal(coordinator.dashboardHost, DASHBOARD_DEFAULTS.host);
    assert.equal(coordinator.dashboardPort, DASHBOARD_DEFAULTS.port);
    const worker = readValues(WORKER_OPTIONS, {}, 'worker');
    for (const key of ['maxPayloadBytes', 'ringConnectTimeoutMs', 'stallWarnMs', 'coordinatorRetryMs'] as const)
      assert.equal(worker[key], WORKER_DEFAULTS[key], key);
    assert.equal(worker.listen, `${WORKER_DEFAULTS.listenHost}:${WORKER_DEFAULTS.listenPort}`);
    assert.equal(COMMON_OPTIONS.heartbeatMs.default, WORKER_DEFAULTS.heartbeatMs);
    assert.equal(LAUNCH_OPTIONS.hostFailureLimit.default, BLACKLIST_DEFAULTS.failureLimit);
    assert.equal(LAUNCH_OPTIONS.blacklistCooldownMs.default, BLACKLIST_DEFAULTS.cooldownMs);
  });

  test('what launch forwards parses back to the same values in the coordinator and the workers', async () => {
    const given = [
      ['--resume', '--tls-cert', 'c.pem', '--tls-key', 'k.pem', '--tls-ca', 'ca.pem', '--compression', 'fp16'],
      ['--epochs', '7', '--lr', '0.01', '--scale-lr', '--checkpoint-every', '50', '--heartbeat-ms', '250'],
      ['--threads', '3', '--stall-warn-ms', '1234', '--backend', 'cpu', '--data-dir', '/d', '--log-level', 'debug'],
      ['--timeline', 't.json', '--dashboard-port', '0', '--max-payload', '2048', '--on-nonfinite', 'abort'],
    ].flat();
    const launch = await parsedBy(launchCommand, ['-n', '2', ...given]);
    const coordinator = await parsedBy(coordinatorCommand, forwardedArgs(launch, 'coordinator'));
    const worker = await parsedBy(workerCommand, ['--coordinator', 'ws://x:1', ...forwardedArgs(launch, 'worker')]);
    for (const s of specs()) {
      const attr = attributeOf(s);
      if (s.forward === 'coordinator' || s.forward === 'both') assert.deepEqual(coordinator[attr], launch[attr], attr);
      if (s.forward === 'worker' || s.forward === 'both') assert.deepEqual(worker[attr], launch[attr], attr);
    }
    assert.equal(coordinator.resume, true);
    assert.equal(coordinator.tlsCert, 'c.pem');
    assert.equal(worker.tlsCa, 'ca.pem');
    assert.equal(worker.threads, 3);
    assert.equal(coordinator.heartbeatMs, 250);
    assert.equal(worker.heartbeatMs, 250);
    assert.equal(worker.maxPayload, WORKER_DEFAULTS.maxPayloadBytes, "the coordinator's --max-payload stays there");
  });

  test('bad values are ConfigErrors naming the flag, with what was typed', async () => {
    const cases: Array<[() => Command, string[], RegExp]> = [
      [coordinatorCommand, ['--batch-size', 'x'], /--batch-size must be a positive integer, got 'x'/],
      [coordinatorCommand, ['--target-accuracy', '2'], /--target-accuracy must be a number in \[0, 1\], got 2/],
      [coordinatorCommand, ['--compression', 'zip'], /--compression must be one of none, fp16, got 'zip'/],
      [workerCommand, ['--coordinator', 'ws://x:1', '--threads', '0'], /--threads must be an integer in \[1, 1024\]/],
      [launchCommand, ['-n', '0'], /--np must be a positive integer, got 0/],
    ];
    for (const [make, args, message] of cases)
      await assert.rejects(parsedBy(make, args), (e: unknown) => e instanceof ConfigError && message.test(e.message));
  });
});

describe('the run config on the wire', () => {
  const good = { ...TRAIN_DEFAULTS, ...RUN_DEFAULTS, model: 'mlp', batchSize: 32 };

  test('a valid config comes back as sent; missing fields get the defaults', () => {
    assert.deepEqual(validateRunConfig(good, 'assign.config'), good);
    assert.deepEqual(validateRunConfig({}, 'assign.config'), { ...TRAIN_DEFAULTS, ...RUN_DEFAULTS });
  });

  test('a bad or unknown field is a ConfigError naming it, never replaced by a default', () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ batchSize: 0 }, /^assign\.config\.batchSize must be a positive integer, got 0$/],
      [{ batchSize: '32' }, /^assign\.config\.batchSize must be a positive integer, got '32'$/],
      [{ reportEvery: 0 }, /^assign\.config\.reportEvery must be a positive integer/],
      [{ compression: 'zip' }, /^assign\.config\.compression must be one of none, fp16/],
      [{ nonFinite: true }, /^assign\.config\.nonFinite must be one of skip, abort, got true/],
      [{ scaleLr: 'yes' }, /^assign\.config\.scaleLr must be true or false/],
      [{ lr: Number.NaN }, /^assign\.config\.lr must be a number in/],
      [{ learningRate: 0.1 }, /^assign\.config\.learningRate is not a known field$/],
    ];
    for (const [patch, message] of cases)
      assert.throws(
        () => validateRunConfig({ ...good, ...patch }, 'assign.config'),
        (e: unknown) => e instanceof ConfigError && message.test(e.message),
        message.source,
      );
  });
});

describe('the command line reports a bad option without a stack trace', () => {
  for (const args of [
    ['coordinator', '--batch-size', 'x'],
    ['coordinator', '--resume'],
    ['worker', '--coordinator', 'http://x', '--token', 't'],
    ['launch', '-np', '2', '--min-workers', '3'],
    ['train', '--epochs', '0'],
  ]) {
    test(args.join(' '), async () => {
      const p = runCli(args);
      assert.equal(await p.exited(60_000), 1, p.output());
      assert.match(p.output(), /^ringtrain: .+ \[CONFIG_INVALID\]\n$/, p.output());
      assert.doesNotMatch(p.output(), /\n\s+at /, 'no stack trace');
    });
  }
});
