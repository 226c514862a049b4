/**
 * Starting workers on other hosts: the launcher command template, shell quoting, the small POSIX `sh` script a
 * worker runs under on its host, and the local handle of one remote worker (its transport process and its output).
 *
 * The template (`--launcher-command`) is a shell command line run with `/bin/sh -c` on the launcher's machine. Its
 * placeholders are replaced by shell-quoted values:
 *   {host}           the host, as listed (`-H`, hostfile, discovery)
 *   {slot}           the worker's slot on that host (0-based)
 *   {command}        the worker command as separate words (`sh -c '<script>'`), for transports that run a program
 *                    with its arguments: `ip netns exec {host} {command}`, `docker exec -i {host} {command}`
 *   {shell_command}  the same command as ONE word, for transports that hand a string to a remote shell, which
 *                    splits it again: ssh (`ssh {host} {shell_command}`)
 *   {ssh_args}       `-p PORT -i FILE` from --ssh-port / --ssh-identity (nothing when neither is given)
 * Upper-case braces such as `${HOME}` are left alone for the shell.
 *
 * The cluster token never appears on a command line (ps shows those on both machines): the launcher writes it as
 * the first line of the transport's stdin, the script reads it into RINGTRAIN_TOKEN and starts the worker with it in
 * its environment. The launcher then keeps stdin open: end of file on it means "stop" (the launcher asked, or the
 * launcher or the ssh connection died), and the script sends the worker SIGTERM. So no worker outlives its launcher.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import { StringDecoder } from 'node:string_decoder';
import { ConfigError } from '../shared/errors.js';
import { CPU_SHARE_JS } from './cpu-binding.js';
import { EXIT_CODES, exitCodeOf } from '../shared/exit-codes.js';
import { slotName, type WorkerSlot } from './hosts.js';

/**
 * ssh without a password prompt (BatchMode: a missing key fails at once instead of hanging), with keep-alives so a
 * host that vanishes ends its ssh within ~15 s. Host keys are checked as usual: add the hosts to known_hosts first.
 */
export const DEFAULT_LAUNCHER_COMMAND =
  'ssh -o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=3 {ssh_args} -- {host} {shell_command}';

/** How workers on this machine are started when the launcher command is the default: directly, no ssh. */
export const LOCAL_LAUNCHER_COMMAND = '{command}';

/** Exit code of the worker script when it is misconfigured (no token on stdin, no address on the interface). */
export const SCRIPT_CONFIG_EXIT = EXIT_CODES.scriptConfig;

const SAFE_WORD = /^[A-Za-z0-9_@%+=:,./-]+$/;

/** Quote one word for a POSIX shell: unchanged when it is plainly safe, else in single quotes. */
export function shellQuote(word: string): string {
  if (SAFE_WORD.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

export function shellJoin(words: readonly string[]): string {
  return words.map(shellQuote).join(' ');
}

/** The first IPv4 address of a network interface (else a non-link-local IPv6 one), from `os.networkInterfaces()`. */
export function interfaceAddress(
  name: string,
  interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]> = os.networkInterfaces(),
): string | undefined {
  const list = interfaces[name] ?? [];
  return (
    list.find((i) => i.family === 'IPv4') ?? list.find((i) => i.family === 'IPv6' && !i.address.startsWith('fe80'))
  )?.address;
}

/** The same lookup as interfaceAddress, as a `node -e` program run on the worker's host (argv[1] = interface). */
const INTERFACE_LOOKUP_JS =
  'const n=process.argv[1],l=require("os").networkInterfaces()[n]||[];' +
  'const a=l.find(i=>i.family==="IPv4")||l.find(i=>i.family==="IPv6"&&!i.address.startsWith("fe80"));' +
  'if(!a){console.error("ringtrain: network interface "+n+" has no address on this host");process.exit(1)}' +
  'console.log(a.address)';

export interface WorkerScriptSpec {
  /** Shell text that runs the ringtrain CLI on the host (`node /path/ringtrain.js`, `npx ringtrain`), used verbatim. */
  ringtrain: string;
  /** The worker's arguments after `worker`, without --advertise. */
  args: readonly string[];
  /** The address ring peers dial; else looked up from `networkInterface` on the host. */
  advertise?: string;
  networkInterface?: string;
  /** Pin the worker to its share of the host's CPUs: it is worker `index` of `count` on that host (cpu-binding.ts). */
  cpuShare?: { index: number; count: number };
  /** Shell text that runs node on the host, for the script's own small programs (default: the `node` on its PATH). */
  node?: string;
}

/**
 * The worker script, on one line (a remote login shell of any family gets it inside single quotes): read the token,
 * work out the advertise address, run the worker in the background, stop it on SIGTERM/SIGINT/SIGHUP or on end of
 * file on stdin, and exit with its exit code.
 */
export function workerScript(spec: WorkerScriptSpec): string {
  if (spec.advertise === undefined && spec.networkInterface === undefined)
    throw new ConfigError('a worker needs an advertise address or a network interface');
  const node = spec.node ?? 'node';
  const advertise =
    spec.advertise !== undefined
      ? `advertise=${shellQuote(spec.advertise)};`
      : `advertise=$(${node} -e ${shellQuote(INTERFACE_LOOKUP_JS)} ${shellQuote(spec.networkInterface!)}) || exit ${SCRIPT_CONFIG_EXIT};`;
  return [
    `IFS= read -r RINGTRAIN_TOKEN || { echo 'ringtrain: no cluster token on stdin' >&2; exit ${SCRIPT_CONFIG_EXIT}; };`,
    'export RINGTRAIN_TOKEN;',
    advertise,
    cpuBindingScript(spec.cpuShare, node),
    'exec 3<&0;',
    // The worker gets no stdin; the watcher below owns it. Background jobs of sh ignore SIGINT, so stop with TERM.
    `$bind ${spec.ringtrain} worker ${shellJoin(spec.args)} --advertise "$advertise" </dev/null 3<&- & pid=$!;`,
    `trap 'kill -TERM $pid 2>/dev/null' INT TERM HUP;`,
    '( while IFS= read -r line; do :; done; kill -TERM $pid 2>/dev/null ) <&3 >/dev/null 2>&1 & watch=$!;',
    'exec 3<&-;',
    // `wait` returns early when a trapped signal arrives; wait again until the worker has really exited.
    'while :; do wait $pid; code=$?; kill -0 $pid 2>/dev/null || break; done;',
    'kill $watch 2>/dev/null; exit $code',
  ].join(' ');
}

/**
 * Sets `bind` to `taskset -c LIST` (or to nothing) for the worker's command line: the share is computed on the host;
 * a host without taskset, or one whose kernel refuses the list, runs the worker unpinned and says why on stderr.
 */
function cpuBindingScript(share: WorkerScriptSpec['cpuShare'], node: string): string {
  if (!share) return 'bind=;';
  const warn = (why: string) => `echo ${shellQuote(`ringtrain: worker not pinned to CPUs: ${why}`)} >&2`;
  return [
    `bind=; cpus=$(${node} -e ${shellQuote(CPU_SHARE_JS)} ${share.index} ${share.count} 2>/dev/null);`,
    'if [ -n "$cpus" ]; then',
    'if ! command -v taskset >/dev/null 2>&1; then',
    `${warn('taskset (util-linux) is not installed')};`,
    'elif taskset -c "$cpus" true 2>/dev/null; then bind="taskset -c $cpus";',
    `else ${warn('taskset refused the CPU list')}; fi;`,
    'fi;',
  ].join(' ');
}

export interface TemplateValues {
  host: string;
  slot: number;
  /** The worker script (workerScript). */
  script: string;
  sshPort?: number;
  sshIdentity?: string;
}

const PLACEHOLDERS = ['host', 'slot', 'command', 'shell_command', 'ssh_args'] as const;

/** Check a launcher command template once, before anything starts. */
export function checkLauncherTemplate(template: string): void {
  for (const m of template.matchAll(/\{([a-z_]+)\}/g)) {
    if (!(PLACEHOLDERS as readonly string[]).includes(m[1]!)) {
      throw new ConfigError(
        `--launcher-command: unknown placeholder {${m[1]}} (known: ${PLACEHOLDERS.map((p) => `{${p}}`).join(' ')})`,
      );
    }
  }
  if (!/\{(?:command|shell_command)\}/.test(template)) {
    throw new ConfigError(
      '--launcher-command must contain {command} (a program and its arguments) or {shell_command} (one string for a remote shell, as ssh takes it)',
    );
  }
}

/** The shell command line that starts one worker. */
export function renderLauncherCommand(template: string, v: TemplateValues): string {
  checkLauncherTemplate(template);
  const command = `sh -c ${shellQuote(v.script)}`;
  const sshArgs = [
    ...(v.sshPort !== undefined ? ['-p', String(v.sshPort)] : []),
    ...(v.sshIdentity !== undefined ? ['-i', v.sshIdentity] : []),
  ];
  const values: Record<(typeof PLACEHOLDERS)[number], string> = {
    host: shellQuote(v.host),
    slot: String(v.slot),
    command,
    shell_command: shellQuote(command),
    ssh_args: shellJoin(sshArgs),
  };
  return template.replace(/\{([a-z_]+)\}/g, (_m, name: keyof typeof values) => values[name]).trim();
}

/** Splits a byte stream into lines and writes each with a prefix (a partial last line is held until it completes). */
export class LinePrefixer {
  private pending = '';
  private readonly decoder = new StringDecoder('utf8');

  constructor(
    private readonly prefix: string,
    private readonly write: (text: string) => void,
  ) {}

  push(chunk: Buffer | string): void {
    const text = this.pending + (typeof chunk === 'string' ? chunk : this.decoder.write(chunk));
    const lines = text.split('\n');
    this.pending = lines.pop()!;
    if (lines.length > 0) this.write(lines.map((l) => `${this.prefix}${l.replace(/\r$/, '')}\n`).join(''));
  }

  /** Write what is left of an unterminated last line. */
  flush(): void {
    const rest = this.pending + this.decoder.end();
    this.pending = '';
    if (rest) this.write(`${this.prefix}${rest}\n`);
  }
}

export interface RemoteWorkerSpec {
  slot: WorkerSlot;
  /** The rendered launcher command (renderLauncherCommand). */
  commandLine: string;
  token: string;
  /** The transport's environment (without the token). */
  env: NodeJS.ProcessEnv;
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

/** One worker started through the launcher command; its output is streamed with a `[host:slot] ` prefix. */
export class RemoteWorker {
  readonly name: string;
  readonly slot: WorkerSlot;
  /** Resolves with the transport's exit code (128 + signal number when a signal ended it) once its output is drained. */
  readonly exited: Promise<number>;
  private readonly child: ChildProcess;
  private stopping = false;
  private code?: number;

  constructor(spec: RemoteWorkerSpec) {
    this.slot = spec.slot;
    this.name = slotName(spec.slot);
    // Its own process group: Ctrl-C in the terminal reaches the launcher and the coordinator, which stop the workers
    // in order, instead of killing every ssh at once; kill() then ends the whole group.
    this.child = spawn('/bin/sh', ['-c', spec.commandLine], {
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
      env: spec.env,
    });
    const out = new LinePrefixer(`[${this.name}] `, spec.stdout);
    const err = new LinePrefixer(`[${this.name}] `, spec.stderr);
    this.child.stdout!.on('data', (d: Buffer) => out.push(d));
    this.child.stderr!.on('data', (d: Buffer) => err.push(d));
    // The transport may exit before it reads its stdin (a host that cannot be reached): that is its exit code's story.
    this.child.stdin!.on('error', () => undefined);
    this.child.stdin!.write(`${spec.token}\n`);
    this.exited = new Promise<number>((resolve) => {
      const done = (code: number) => {
        if (this.code !== undefined) return;
        this.code = code;
        out.flush();
        err.flush();
        resolve(code);
      };
      this.child.once('error', (e) => {
        spec.stderr(`[${this.name}] could not start the launcher command: ${e.message}\n`);
        done(127);
      });
      this.child.once('close', (code, signal) => done(exitCodeOf(code, signal)));
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** True once stop() or kill() was called: its exit is then the launcher's doing, not a failure of the host. */
  get stopRequested(): boolean {
    return this.stopping;
  }

  get running(): boolean {
    return this.code === undefined;
  }

  /** Ask the worker to stop: end of file on its stdin; the script on the host sends the worker SIGTERM. */
  stop(): void {
    this.stopping = true;
    if (!this.child.stdin!.destroyed) this.child.stdin!.end();
  }

  /** End the transport and everything in its local process group at once. */
  kill(): void {
    this.stopping = true;
    if (this.code !== undefined || this.child.pid === undefined) return;
    try {
      process.kill(-this.child.pid, 'SIGKILL');
    } catch {
      this.child.kill('SIGKILL');
    }
  }
}
