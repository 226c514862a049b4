/** `ringtrain train`: the single-process trainer. */
import path from 'node:path';
import { Command } from 'commander';
import { createRootLogger } from '../../shared/log.js';
import { createProgressView } from '../../shared/cli/progress.js';
import { trainSingle } from '../../shared/train/single.js';
import {
  addRoleOptions,
  defaultRunDir,
  readDataOptions,
  readTrainConfig,
  readValues,
} from '../../shared/cli/options.js';
import { COMMON_OPTIONS, SINGLE_OPTIONS } from '../../shared/cli/table.js';

export function trainCommand(): Command {
  const cmd = new Command('train').description('train in one process (the baseline the cluster is measured against)');
  addRoleOptions(cmd, 'train');
  cmd.action(async (opts: Record<string, unknown>) => {
    const config = readTrainConfig(opts);
    const common = readValues(COMMON_OPTIONS, opts, 'train');
    const single = readValues(SINGLE_OPTIONS, opts, 'train');
    const runDir = defaultRunDir(opts);
    const log = createRootLogger({ runDir, name: 'train', level: common.logLevel }).child({ role: 'train' });
    const progress = createProgressView({ quiet: common.quiet });
    progress.line(
      `ringtrain train: ${config.model}, ${config.optimizer} lr ${config.lr}, batch ${config.batchSize}, ${config.epochs} epochs; logs in ${runDir}`,
    );
    const saveDir = single.save ? (single.saveDir ?? path.join(runDir, 'model')) : undefined;
    const summary = await trainSingle({
      config,
      backend: common.backend,
      threads: common.threads,
      stepGraph: common.stepGraph,
      dataDir: common.dataDir,
      dataOptions: readDataOptions(opts, 'train'),
      summaryJson: common.summaryJson,
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
