/**
 * Host lists (-H, --hostfile, discovery lines), slot assignment, and the launcher command: shell quoting checked by
 * a real `sh`, template rendering, and the worker script run end to end with stand-in workers.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { describe, test } from 'node:test';
import { ConfigError } from '../shared/errors.js';
import {
  assignSlots,
  isLocalHost,
  parseHostEntry,
  parseHostfile,
  parseHostLines,
  parseHostList,
  slotName,
  totalSlots,
} from '../launcher/hosts.js';
import {
  checkLauncherTemplate,
  DEFAULT_LAUNCHER_COMMAND,
  interfaceAddress,
  LinePrefixer,
  LOCAL_LAUNCHER_COMMAND,
  RemoteWorker,
  renderLauncherCommand,
  SCRIPT_CONFIG_EXIT,
  shellJoin,
  shellQuote,
  workerScript,
} from '../launcher/remote.js';

describe('host lists', () => {
  test('-H host:slots, default one slot, advertise after the slots, user@host, IPv6 in brackets', () => {
    assert.deepEqual(parseHostList('a:4,b:4'), [
      { host: 'a', slots: 4 },
      { host: 'b', slots: 4 },
    ]);
    assert.deepEqual(parseHostList(' a , b:2@10.0.0.2 '), [
      { host: 'a', slots: 1 },
      { host: 'b', slots: 2, advertise: '10.0.0.2' },
    ]);
    assert.deepEqual(parseHostEntry('alice@gpu-1.lan:8'), { host: 'alice@gpu-1.lan', slots: 8 });
    assert.deepEqual(parseHostEntry('[fd00::2]:2@[fd00::2]'), { host: 'fd00::2', slots: 2, advertise: 'fd00::2' });
    assert.deepEqual(parseHostEntry('b:3@fd00::7'), { host: 'b', slots: 3, advertise: 'fd00::7' });
    assert.deepEqual(parseHostEntry('[::1]'), { host: '::1', slots: 1 });
  });

  test('bad entries are configuration errors that name the problem', () => {
    const bad: Array<[string, RegExp]> = [
      ['a:0', /slots must be a positive integer, got '0'/],
      ['a:x', /slots must be a positive integer/],
      ['a:2.5', /slots must be a positive integer/],
      ['-oProxyCommand=evil:1', /not a usable host name/],
      ['a b:1', /not a usable host name/],
      ['a:1@', /not a usable advertise address/],
      ['a:1@x y', /not a usable advertise address/],
      ['[zz]:1', /not an IPv6 address/],
    ];
    for (const [entry, message] of bad)
      assert.throws(
        () => parseHostList(entry),
        (e: unknown) => e instanceof ConfigError && message.test(e.message),
        entry,
      );
    assert.throws(() => parseHostList('a:1,a:2'), /host 'a' is listed twice/);
    assert.throws(() => parseHostList(' , '), /no hosts given/);
  });

  test('hostfile: slots= and advertise= fields, comments, errors with the line number', () => {
    const text =
      '# cluster\nnode-a slots=4\n\n  node-b slots=2 advertise=10.1.0.2   # second\nnode-c\n[fd00::3] slots=1\n';
    assert.deepEqual(parseHostfile(text, 'hosts.txt'), [
      { host: 'node-a', slots: 4 },
      { host: 'node-b', slots: 2, advertise: '10.1.0.2' },
      { host: 'node-c', slots: 1 },
      { host: 'fd00::3', slots: 1 },
    ]);
    assert.throws(
      () => parseHostfile('a slots=2\nb max_slots=3\n', 'hosts.txt'),
      /hosts.txt:2: unknown field 'max_slots=3'/,
    );
    assert.throws(() => parseHostfile('a slots=-1\n', 'h'), /h:1: slots must be a positive integer/);
    assert.throws(() => parseHostfile('# nothing\n\n', 'h'), /h: no hosts listed/);
    assert.throws(() => parseHostfile('a\na slots=2\n', 'h'), /listed twice/);
  });

  test('discovery lines: host:slots, an empty list is valid', () => {
    assert.deepEqual(parseHostLines('h1:2\n# down for maintenance: h2:2\n\nh3:1@10.0.0.3\n'), [
      { host: 'h1', slots: 2 },
      { host: 'h3', slots: 1, advertise: '10.0.0.3' },
    ]);
    assert.deepEqual(parseHostLines('\n'), []);
    assert.throws(() => parseHostLines('h1:2\nh1:3'), /listed twice/);
    assert.throws(() => parseHostLines('h1:two'), /line 1: slots must be a positive integer/);
  });

  test('slots are filled host by host, -np takes a prefix, too many is an error', () => {
    const hosts = parseHostList('a:2,b:3@10.0.0.2');
    assert.equal(totalSlots(hosts), 5);
    assert.deepEqual(assignSlots(hosts).map(slotName), ['a:0', 'a:1', 'b:0', 'b:1', 'b:2']);
    assert.deepEqual(assignSlots(hosts, 3), [
      { host: 'a', slot: 0 },
      { host: 'a', slot: 1 },
      { host: 'b', slot: 0, advertise: '10.0.0.2' },
    ]);
    assert.throws(() => assignSlots(hosts, 6), /-np 6 is more than the 5 slot\(s\)/);
    assert.equal(slotName({ host: 'fd00::1', slot: 2 }), '[fd00::1]:2');
  });

  test('local hosts', () => {
    for (const h of ['localhost', '127.0.0.1', '::1', 'me']) assert.ok(isLocalHost(h, 'me'), h);
    assert.ok(!isLocalHost('other', 'me'));
  });
});

/** What `sh` makes of a command line: the words it passes to printf. */
function shellWords(line: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    execFile('/bin/sh', ['-c', `printf '%s\\0' ${line}`], (err, stdout) =>
      err ? reject(err) : resolve(stdout.split('\0').slice(0, -1)),
    );
  });
}

describe('shell quoting', () => {
  test('every word survives a real sh unchanged', async () => {
    const words = [
      'plain',
      'with space',
      "it's",
      'say "hi"',
      '$HOME',
      '`id`',
      '$(id)',
      'a\\b',
      'tab\there',
      'new\nline',
      '',
      '*',
      '~',
      'ünï',
      "'",
      "''",
      '-x',
      'a;b|c&d',
    ];
    assert.deepEqual(await shellWords(shellJoin(words)), words);
  });

  test('safe words stay readable, others are single-quoted', () => {
    assert.equal(shellQuote('/opt/ringtrain/dist/scripts/ringtrain.js'), '/opt/ringtrain/dist/scripts/ringtrain.js');
    assert.equal(shellQuote('--listen=0.0.0.0:0'), '--listen=0.0.0.0:0');
    assert.equal(shellQuote("it's"), `'it'\\''s'`);
    assert.equal(shellQuote(''), `''`);
  });
});

describe('launcher command templates', () => {
  const script = 'echo hi';

  test('placeholders are replaced by quoted values; unknown ones and a missing command are rejected', () => {
    const line = renderLauncherCommand('ip netns exec {host} {command}', { host: 'ns 1', slot: 0, script });
    assert.equal(line, `ip netns exec 'ns 1' sh -c 'echo hi'`);
    const ssh = renderLauncherCommand(DEFAULT_LAUNCHER_COMMAND, {
      host: 'b',
      slot: 1,
      script,
      sshPort: 2222,
      sshIdentity: '/keys/my key',
    });
    assert.match(ssh, /^ssh -o BatchMode=yes .* -p 2222 -i '\/keys\/my key' -- b 'sh -c '\\''echo hi'\\'''$/);
    assert.equal(
      renderLauncherCommand('run --slot {slot} ${HOME} {command}', { host: 'h', slot: 3, script }),
      `run --slot 3 \${HOME} sh -c 'echo hi'`,
    );
    assert.throws(() => checkLauncherTemplate('ssh {hostname} {command}'), /unknown placeholder \{hostname\}/);
    assert.throws(() => checkLauncherTemplate('ssh {host}'), /must contain \{command\}/);
    assert.equal(LOCAL_LAUNCHER_COMMAND, '{command}');
  });

  test('the script needs an address or an interface', () => {
    assert.throws(() => workerScript({ ringtrain: 'x', args: [] }), ConfigError);
  });

  test('interface addresses: IPv4 first, else a global IPv6 one', () => {
    const v4 = { address: '10.0.0.5', family: 'IPv4' } as const;
    const v6 = { address: 'fd00::5', family: 'IPv6' } as const;
    const ll = { address: 'fe80::1', family: 'IPv6' } as const;
    const ifaces = { eth0: [ll, v6, v4], eth1: [ll, v6], eth2: [ll] } as unknown as Parameters<
      typeof interfaceAddress
    >[1];
    assert.equal(interfaceAddress('eth0', ifaces), '10.0.0.5');
    assert.equal(interfaceAddress('eth1', ifaces), 'fd00::5');
    assert.equal(interfaceAddress('eth2', ifaces), undefined);
    assert.equal(interfaceAddress('nope', ifaces), undefined);
  });

  test('output lines get a prefix, also when chunks split lines and characters', () => {
    let out = '';
    const p = new LinePrefixer('[h:0] ', (t) => {
      out += t;
    });
    const bytes = Buffer.from('first\r\nsecönd\nthird');
    p.push(bytes.subarray(0, 3));
    assert.equal(out, '');
    p.push(bytes.subarray(3, 11)); // ends inside the two bytes of 'ö'
    assert.equal(out, '[h:0] first\n');
    p.push(bytes.subarray(11));
    assert.equal(out, '[h:0] first\n[h:0] secönd\n');
    p.push('\n');
    p.push('tail');
    p.flush();
    assert.equal(out, '[h:0] first\n[h:0] secönd\n[h:0] third\n[h:0] tail\n');
  });
});

/** A stand-in for `ringtrain`: prints its arguments and its token as JSON, or waits for SIGTERM. */
const ECHO_WORKER = `node -e ${shellQuote('console.log(JSON.stringify({ argv: process.argv.slice(1), token: process.env.RINGTRAIN_TOKEN }))')}`;
const WAITING_WORKER = `node -e ${shellQuote('process.on("SIGTERM",()=>{console.log("term");process.exit(3)});setInterval(()=>{},1000);console.log("up")')}`;

function runWorker(
  template: string,
  ringtrain: string,
  args: string[],
  extra: { advertise?: string; networkInterface?: string } = { advertise: '10.0.0.9' },
) {
  const token = 'secret token with spaces';
  const commandLine = renderLauncherCommand(template, {
    host: 'h',
    slot: 0,
    script: workerScript({ ringtrain, args, ...extra }),
  });
  let out = '';
  let err = '';
  const waiters: Array<() => void> = [];
  const worker = new RemoteWorker({
    slot: { host: 'h', slot: 0 },
    commandLine,
    token,
    env: { PATH: process.env.PATH },
    stdout: (t) => {
      out += t;
      waiters.forEach((w) => w());
    },
    stderr: (t) => {
      err += t;
    },
  });
  const waitOut = (re: RegExp) =>
    new Promise<void>((resolve) => {
      const check = () => re.test(out) && resolve();
      waiters.push(check);
      check();
    });
  return { worker, commandLine, token, out: () => out, err: () => err, waitOut };
}

describe('the worker script through a launcher command', () => {
  const args = ['--coordinator', 'ws://10.0.0.1:29500', '--run-dir', '/tmp/a b/it\'s "here"'];

  for (const template of ['{command}', 'sh -c {shell_command}']) {
    // `sh -c {shell_command}` does what ssh does: one string, split again by the shell on the other side.
    test(`arguments and the token arrive intact: ${template}`, async () => {
      const r = runWorker(template, ECHO_WORKER, args);
      assert.equal(await r.worker.exited, 0, r.err());
      assert.ok(!r.commandLine.includes(r.token), 'the token is not on the command line');
      const line = r.out().trim();
      assert.match(line, /^\[h:0\] /);
      const seen = JSON.parse(line.slice('[h:0] '.length)) as { argv: string[]; token: string };
      assert.deepEqual(seen.argv, ['worker', ...args, '--advertise', '10.0.0.9']);
      assert.equal(seen.token, r.token);
    });
  }

  test('--network-interface is looked up on the host running the worker', async () => {
    const r = runWorker('{command}', ECHO_WORKER, [], { networkInterface: 'lo' });
    assert.equal(await r.worker.exited, 0, r.err());
    assert.deepEqual(JSON.parse(r.out().slice('[h:0] '.length)).argv, ['worker', '--advertise', '127.0.0.1']);
    const missing = runWorker('{command}', ECHO_WORKER, [], { networkInterface: 'no-such-if0' });
    assert.equal(await missing.worker.exited, SCRIPT_CONFIG_EXIT);
    assert.match(missing.err(), /\[h:0\] ringtrain: network interface no-such-if0 has no address/);
  });

  test("end of file on stdin stops the worker with SIGTERM; the worker's exit code comes back", async () => {
    const r = runWorker('sh -c {shell_command}', WAITING_WORKER, []);
    await r.waitOut(/up/);
    r.worker.stop();
    assert.equal(await r.worker.exited, 3);
    assert.match(r.out(), /\[h:0\] term/);
    assert.ok(r.worker.stopRequested);
  });

  test("kill() ends the transport's whole process group", async () => {
    const r = runWorker('{command}', WAITING_WORKER, []);
    await r.waitOut(/up/);
    r.worker.kill();
    assert.equal(await r.worker.exited, 128 + 9);
  });

  test('without a token on stdin the script refuses to start the worker', async () => {
    const script = workerScript({ ringtrain: ECHO_WORKER, args: [], advertise: 'x' });
    const child = spawn('/bin/sh', ['-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.stdin.end();
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    assert.equal(code, SCRIPT_CONFIG_EXIT);
    assert.match(err, /no cluster token on stdin/);
  });
});
