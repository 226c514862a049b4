/**
 * The Kubernetes manifests in deploy/k8s: they parse, they fit together (Service -> coordinator pods, workers ->
 * Service, one Secret, the kustomization lists every file), their container arguments are accepted by the real CLI
 * parsers (after Kubernetes' $(VAR) expansion), and the coordinator's entry script resumes, starts or idles as it
 * should. Plus the Dockerfile's entrypoint, which those arguments follow.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { coordinatorCommand } from '../coordinator/cli.js';
import { parseHostPort, readBackend, readTrainConfig } from '../shared/cli/options.js';
import { workerCommand } from '../worker/cli.js';
import { tempDir } from './helpers/procs.js';
import { parsedBy } from './helpers/cli.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const K8S = path.join(ROOT, 'deploy', 'k8s');

/** Manifests are untyped YAML; the assertions check their shape. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed YAML of any shape
type Doc = Record<string, any>;
interface Container {
  name: string;
  image: string;
  command?: string[];
  args: string[];
  env?: Array<{ name: string; value?: string; valueFrom?: Doc }>;
  ports?: Array<{ name: string; containerPort: number }>;
}

async function loadDir(): Promise<{ files: string[]; docs: Doc[] }> {
  const files = (await fs.readdir(K8S)).filter((f) => f.endsWith('.yaml')).sort();
  const docs: Doc[] = [];
  for (const f of files) {
    for (const d of parseAllDocuments(await fs.readFile(path.join(K8S, f), 'utf8'))) {
      assert.deepEqual(d.errors.map(String), [], `${f} parses`);
      docs.push({ ...(d.toJS() as Doc), __file: f });
    }
  }
  return { files, docs };
}

function find(docs: Doc[], kind: string, name: string): Doc {
  const doc = docs.find((d) => d.kind === kind && d.metadata?.name === name);
  assert.ok(doc, `${kind}/${name} exists`);
  return doc;
}

function onlyContainer(deployment: Doc): Container {
  const containers = deployment.spec.template.spec.containers as Container[];
  assert.equal(containers.length, 1);
  return containers[0]!;
}

/** Kubernetes expands $(VAR) in args from the container's env; every reference must be declared. */
function expand(c: Container, values: Record<string, string>): string[] {
  const declared = new Set((c.env ?? []).map((e) => e.name));
  return c.args.map((a) =>
    a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (_m, name: string) => {
      assert.ok(declared.has(name), `$(${name}) in ${c.name}'s args is declared in its env`);
      assert.ok(name in values, `a test value for ${name}`);
      return values[name]!;
    }),
  );
}

/** Parse `args` with one of the real subcommands, its action replaced: throws on anything the CLI would reject. */
function secretRef(c: Container): { name: string; key: string } {
  const token = (c.env ?? []).find((e) => e.name === 'RINGTRAIN_TOKEN');
  assert.ok(token?.valueFrom?.secretKeyRef, `${c.name} gets RINGTRAIN_TOKEN from a Secret, not a literal`);
  assert.equal(token.value, undefined);
  return token.valueFrom.secretKeyRef;
}

describe('Kubernetes manifests', () => {
  test('every file parses; the kustomization lists the others and renames the image they use', async () => {
    const { files, docs } = await loadDir();
    for (const d of docs) assert.ok(d.apiVersion && d.kind, `${d.__file}: apiVersion and kind`);
    const kustomization = docs.find((d) => d.kind === 'Kustomization');
    assert.ok(kustomization);
    assert.deepEqual(
      [...kustomization.resources].sort(),
      files.filter((f) => f !== kustomization.__file),
    );
    const images = new Set(
      docs.filter((d) => d.kind === 'Deployment').map((d) => onlyContainer(d).image.split(':')[0]),
    );
    assert.deepEqual([...images], [kustomization.images[0].name]);
  });

  test('the Service selects the coordinator pods and targets its control port; workers dial the Service', async () => {
    const { docs } = await loadDir();
    const coord = find(docs, 'Deployment', 'ringtrain-coordinator');
    const workers = find(docs, 'Deployment', 'ringtrain-worker');
    const service = find(docs, 'Service', 'ringtrain-coordinator');
    const podLabels = coord.spec.template.metadata.labels as Record<string, string>;
    for (const [k, v] of Object.entries(service.spec.selector as Record<string, string>))
      assert.equal(podLabels[k], v, `selector ${k}`);
    const workerLabels = workers.spec.template.metadata.labels as Record<string, string>;
    assert.ok(
      Object.entries(service.spec.selector as Record<string, string>).some(([k, v]) => workerLabels[k] !== v),
      'the Service does not select workers',
    );
    const port = service.spec.ports[0];
    const coordContainer = onlyContainer(coord);
    assert.equal(coordContainer.ports!.find((p) => p.name === port.targetPort)!.containerPort, port.port);
    const opts = await parsedBy(workerCommand, expand(onlyContainer(workers), { POD_IP: '10.42.0.7' }).slice(1));
    assert.equal(opts.coordinator, `ws://${service.metadata.name}:${port.port}`);
    assert.equal(coord.spec.replicas, 1);
    assert.equal(coord.spec.strategy.type, 'Recreate', 'never two coordinators on one run folder');
    assert.equal((coordContainer as Doc).readinessProbe.httpGet.path, '/healthz');
    assert.deepEqual(secretRef(coordContainer), secretRef(onlyContainer(workers)));
  });

  test("the coordinator's arguments are accepted by `ringtrain coordinator`, as the entry script extends them", async () => {
    const { docs } = await loadDir();
    const c = onlyContainer(find(docs, 'Deployment', 'ringtrain-coordinator'));
    const args = expand(c, {});
    assert.equal(args[0], 'coordinator');
    for (const extra of [[], ['--resume']]) {
      const opts = await parsedBy(coordinatorCommand, [
        ...args.slice(1),
        '--run-dir',
        '/runs/mnist',
        '--summary-json',
        '/runs/mnist/summary.json',
        ...extra,
      ]);
      readTrainConfig(opts);
      assert.equal(opts.port, 29500);
      assert.ok(
        Number(opts.minWorkers) >= 1 && Number(opts.minWorkers) <= Number(opts.maxWorkers),
        'min <= max workers',
      );
      assert.equal(opts.host, '0.0.0.0');
    }
    const runDir = c.env!.find((e) => e.name === 'RINGTRAIN_RUN_DIR')!.value!;
    const mounts = (c as Doc).volumeMounts as Array<{ mountPath: string }>;
    assert.ok(
      mounts.some((m) => runDir.startsWith(`${m.mountPath}/`)),
      'the run folder is on a volume',
    );
  });

  test("the workers' arguments are accepted by `ringtrain worker`; each advertises its pod IP", async () => {
    const { docs } = await loadDir();
    const c = onlyContainer(find(docs, 'Deployment', 'ringtrain-worker'));
    const args = expand(c, { POD_IP: '10.42.0.7' });
    assert.equal(args[0], 'worker');
    const opts = await parsedBy(workerCommand, args.slice(1));
    assert.equal(opts.advertise, '10.42.0.7');
    const listen = parseHostPort(String(opts.listen));
    assert.equal(listen.port, c.ports!.find((p) => p.name === 'ring')!.containerPort);
    readBackend(opts);
    assert.ok(Number(opts.coordinatorRetryMs) >= 60_000, 'workers ride out a coordinator restart');
    assert.equal(c.env!.find((e) => e.name === 'POD_IP')!.valueFrom!.fieldRef.fieldPath, 'status.podIP');
  });

  test('the parsers used here do reject what the CLI rejects', async () => {
    await assert.rejects(parsedBy(workerCommand, ['--coordinator', 'ws://x:1', '--no-such-option']), /unknown option/);
    await assert.rejects(
      parsedBy(coordinatorCommand, ['--port', 'http']),
      /--port must be an integer in \[0, 65535\], got 'http'/,
    );
    await assert.rejects(
      parsedBy(workerCommand, ['--listen', '0.0.0.0:1']),
      /required option '--coordinator <url>' not specified/,
    );
  });
});

describe('container image', () => {
  test("the Dockerfile's entrypoint is the ringtrain CLI the entry script runs; its user is the pods' uid", async () => {
    const dockerfile = await fs.readFile(path.join(ROOT, 'Dockerfile'), 'utf8');
    assert.match(dockerfile, /^ENTRYPOINT \["node", "\/app\/dist\/scripts\/ringtrain\.js"\]$/m);
    assert.match(dockerfile, /^FROM \$\{NODE_IMAGE\} AS build$/m);
    assert.match(dockerfile, /^FROM \$\{NODE_IMAGE\} AS runtime$/m);
    assert.match(dockerfile, /^USER node$/m, 'uid 1000 in the node images');
    const { docs } = await loadDir();
    const script = find(docs, 'ConfigMap', 'ringtrain-coordinator').data['run-coordinator.sh'] as string;
    assert.match(script, /cli=\$\{RINGTRAIN_CLI:-\/app\/dist\/scripts\/ringtrain\.js\}/);
    for (const name of ['ringtrain-coordinator', 'ringtrain-worker']) {
      assert.equal(find(docs, 'Deployment', name).spec.template.spec.securityContext.runAsUser, 1000);
    }
  });
});

describe('the coordinator entry script', () => {
  async function setup(): Promise<{ script: string; runDir: string; cli: string }> {
    const dir = await tempDir('k8s-entry');
    const { docs } = await loadDir();
    const script = path.join(dir, 'run-coordinator.sh');
    await fs.writeFile(script, find(docs, 'ConfigMap', 'ringtrain-coordinator').data['run-coordinator.sh'] as string);
    // A stand-in for the ringtrain CLI that prints the arguments it got.
    const cli = path.join(dir, 'cli.cjs');
    await fs.writeFile(cli, 'console.log("ARGS " + JSON.stringify(process.argv.slice(2)))\n');
    const runDir = path.join(dir, 'run');
    await fs.mkdir(runDir);
    return { script, runDir, cli };
  }

  function run(s: { script: string; runDir: string; cli: string }, args: string[]) {
    const child = spawn('/bin/sh', [s.script, ...args], {
      env: {
        PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}`,
        RINGTRAIN_RUN_DIR: s.runDir,
        RINGTRAIN_CLI: s.cli,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const waiters: Array<() => void> = [];
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      waiters.forEach((w) => w());
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const code = new Promise<number | null>((resolve) => child.once('close', resolve));
    const waitFor = (re: RegExp) =>
      new Promise<void>((resolve) => {
        const check = () => re.test(out) && resolve();
        waiters.push(check);
        check();
      });
    return { child, code, out: () => out, waitFor };
  }

  const argsOf = (out: string) => JSON.parse(/^ARGS (.*)$/m.exec(out)![1]!) as string[];

  test('a fresh run starts; after a restart with checkpoints (or an interrupted summary) it resumes', async () => {
    const s = await setup();
    const fresh = run(s, ['coordinator', '--epochs', '2']);
    assert.equal(await fresh.code, 0, fresh.out());
    assert.deepEqual(argsOf(fresh.out()), [
      'coordinator',
      '--epochs',
      '2',
      '--run-dir',
      s.runDir,
      '--summary-json',
      `${s.runDir}/summary.json`,
    ]);
    await fs.mkdir(path.join(s.runDir, 'checkpoints'));
    await fs.writeFile(path.join(s.runDir, 'checkpoints', 'step-00000200.rtckpt'), 'x');
    await fs.writeFile(path.join(s.runDir, 'summary.json'), JSON.stringify({ outcome: 'interrupted' }, null, 2));
    const resumed = run(s, ['coordinator']);
    assert.equal(await resumed.code, 0, resumed.out());
    assert.deepEqual(argsOf(resumed.out()).slice(-1), ['--resume']);
  });

  test('after a finished run it stays idle (a Deployment must not train again) and ends on SIGTERM', async () => {
    const s = await setup();
    await fs.writeFile(
      path.join(s.runDir, 'summary.json'),
      JSON.stringify({ outcome: 'finished', epochs: 8 }, null, 2),
    );
    const idle = run(s, ['coordinator']);
    await idle.waitFor(/ringtrain: idle/);
    assert.doesNotMatch(idle.out(), /^ARGS /m);
    idle.child.kill('SIGTERM');
    assert.equal(await idle.code, 0);
  });
});
