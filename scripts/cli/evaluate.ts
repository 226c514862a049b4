/** `ringtrain evaluate`: a saved model (a run's `model/` folder) against a dataset's test split. */
import { Command } from 'commander';
import { limitSplit } from '../../shared/data/dataset.js';
import { loadDataset, type DataOptions } from '../../shared/data/load.js';
import { addRoleOptions, readBackend, readDataOptions } from '../../shared/cli/options.js';
import { COMMON_OPTIONS, DATA_OPTIONS } from '../../shared/cli/table.js';
import { selectBackend } from '../../shared/tf/backend.js';
import { checkModelFits, evaluateModel, type EvaluationSummary } from '../../shared/train/evaluate.js';
import { loadModel, modelMetadata } from '../../shared/train/model-io.js';
import { writeJson } from '../../shared/train/single.js';

function report(s: EvaluationSummary): string {
  const width = Math.max(5, ...s.perClass.map((c) => c.name.length));
  const lines = [
    `test accuracy ${(100 * s.testAccuracy).toFixed(2)}%  loss ${s.testLoss.toFixed(4)}  (${s.samples} samples)`,
    `${'class'.padEnd(width)}  accuracy  samples   predicted as ->`,
    ...s.perClass.map(
      (c) =>
        `${c.name.padEnd(width)}  ${(100 * c.accuracy).toFixed(2).padStart(7)}%  ${String(c.count).padStart(7)}   ` +
        s.confusion[c.index]!.map((v) => String(v).padStart(5)).join(''),
    ),
  ];
  return `${lines.join('\n')}\n`;
}

/** Class folders are decoded to the model's input size and channels unless the options say otherwise. */
function modelDataOptions(opts: Record<string, unknown>, inputShape: readonly number[]): DataOptions {
  const o = readDataOptions(opts, 'evaluate');
  const [height, width, channels] = inputShape;
  if (!height || !width || !channels) return o;
  return {
    ...o,
    imageSize: o.imageSize ?? [height, width],
    colorMode: o.colorMode !== 'auto' ? o.colorMode : channels === 1 ? 'grayscale' : 'rgb',
  };
}

export function evaluateCommand(): Command {
  const cmd = new Command('evaluate').description(
    "a saved model's test accuracy, loss, per-class accuracy and confusion matrix",
  );
  cmd.requiredOption('--model-dir <dir>', 'folder with model.json and weights.bin (a run saves RUN_DIR/model)');
  addRoleOptions(cmd, 'evaluate', [COMMON_OPTIONS, DATA_OPTIONS]);
  cmd.option('--test-limit <n>', 'evaluate on only the first N test samples (0 = all)', Number, 0);
  cmd.option('--summary-json <file>', 'write the results (testAccuracy, testLoss, perClass, confusion) to this file');
  cmd.action(async (opts: Record<string, unknown>) => {
    await selectBackend(readBackend(opts));
    const dir = String(opts.modelDir);
    const model = await loadModel(dir);
    const meta = modelMetadata(model);
    const data = await loadDataset(opts.dataDir as string | undefined, modelDataOptions(opts, meta.inputShape));
    const limit = Number(opts.testLimit);
    const test = limit > 0 ? limitSplit(data.test, limit) : data.test;
    checkModelFits(model, test, data.numClasses, dir);
    const summary = evaluateModel(model, test, meta.classNames);
    process.stdout.write(report(summary));
    if (opts.summaryJson) await writeJson(String(opts.summaryJson), { modelDir: dir, ...summary });
    model.dispose();
  });
  return cmd;
}
