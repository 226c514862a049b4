/** `ringtrain train`: the single-process trainer. */
import path from 'node:path';
import { Command } from 'commander';
import { createRootLogger } from '../../shared/log.js';
import { createProgressView } from '../../shared/cli/progress.js';
import { trainSingle } from '../../shared/train/single.js';
import {
  addBackendOptions,
  addDataDirOption,
  addOutputOptions,
  addTrainOptions,
  defaultRunDir,
  readDataOptions,
  readBackend,
  readTrainConfig,
} from '../../shared/cli/options.js';

export function trainCommand(): Command {
  const cmd = new Command('train').description('train in one process (the baseline the cluster is measured against)');
  addTrainOptions(cmd);
  addBackendOptions(cmd);
  addDataDirOption(cmd);
  addOutputOptions(cmd);
  cmd.option('--save-dir <dir>', 'where to save the trained model (default: <run-dir>/model)');
  cmd.option('--no-save', 'do not save the trained model');
  cmd.action(async (opts: Record<string, unknown>) => {
    const config = readTrainConfig(opts);
    const runDir = defaultRunDir(opts);
    const log = createRootLogger({ runDir, name: 'train', level: opts.logLevel as 'info' }).child({ role: 'train' });
    const progress = createProgressView({ quiet: Boolean(opts.quiet) });
    progress.line(
      `ringtrain train: ${config.model}, ${config.optimizer} lr ${config.lr}, batch ${config.batchSize}, ${config.epochs} epochs; logs in ${runDir}`,
    );
    const saveDir = opts.save === false ? undefined : String(opts.saveDir ?? path.join(runDir, 'model'));
    const summary = await trainSingle({
      config,
      backend: readBackend(opts),
      dataDir: opts.dataDir as string | undefined,
      dataOptions: readDataOptions(opts),
      summaryJson: opts.summaryJson as string | undefined,
      saveDir,
      log,
      progress,
    });
    progress.line(
      `done: ${summary.epochs} epochs, ${summary.steps} steps, test accuracy ${(100 * summary.testAccuracy).toFixed(2)}%, ${summary.samplesPerSec.toFixed(0)} samples/s, ${summary.wallSeconds.toFixed(1)} s on ${summary.backend}${saveDir ? `; model in ${saveDir}` : ''}`,
    );
  });
  return cmd;
}
