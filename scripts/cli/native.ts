/** `ringtrain doctor` and `ringtrain setup-native`: check and set up the native TensorFlow backend. */
import { Command, Option } from 'commander';
import { ConfigError } from '../../shared/errors.js';
import { formatDoctor, runDoctor } from '../../shared/tf/native-doctor.js';
import { setupFailureReason, setupNative } from '../../shared/tf/native-setup.js';
import { nativeInstallDir, writeSetupStatus } from '../../shared/tf/native-paths.js';
import { intOption } from '../../shared/cli/options.js';

function doctorCommand(): Command {
  return new Command('doctor')
    .description('tell, for each TensorFlow.js backend, whether it loads here, its version and threads, and why not')
    .addOption(
      new Option('--threads <n>', 'threads to report for the native backend').argParser(intOption('--threads')),
    )
    .option('--json', 'print the report as JSON')
    .action(async (opts: { threads?: number; json?: boolean }) => {
      const report = await runDoctor({ threads: opts.threads });
      process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : formatDoctor(report));
    });
}

function setupCommand(): Command {
  return new Command('setup-native')
    .description(
      'build the native tensorflow backend (tfjs-node on libtensorflow); default: the pinned TensorFlow CPU wheel',
    )
    .option('--wheel <file>', 'a TensorFlow wheel (.whl) to take libtensorflow from')
    .option('--libtensorflow <dir>', 'a libtensorflow folder (lib/ and include/, as in the C-API tarball)')
    .action(async (opts: { wheel?: string; libtensorflow?: string }) => {
      if (opts.wheel && opts.libtensorflow) throw new ConfigError('give --wheel or --libtensorflow, not both');
      const started = performance.now();
      try {
        const m = await setupNative({ ...opts, say: (l) => process.stdout.write(`setup-native: ${l}\n`) });
        writeSetupStatus(nativeInstallDir(), { ok: true, at: new Date().toISOString() });
        const s = ((performance.now() - started) / 1000).toFixed(1);
        process.stdout.write(`native backend ready: libtensorflow ${m.tensorflow}, tfjs-node ${m.tfjsNode} (${s} s)\n`);
      } catch (err) {
        const reason = setupFailureReason(err);
        writeSetupStatus(nativeInstallDir(), { ok: false, reason, at: new Date().toISOString() });
        process.stderr.write(`setup-native: ${reason}\n`);
        process.exitCode = 1;
      }
    });
}

export function nativeCommands(): Command[] {
  return [doctorCommand(), setupCommand()];
}
