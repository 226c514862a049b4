/** `ringtrain predict`: the top classes of image files under a saved model (a run's `model/` folder). */
import { Command } from 'commander';
import { addRoleOptions, intOption, readBackend } from '../../shared/cli/options.js';
import { COMMON_OPTIONS } from '../../shared/cli/table.js';
import { decodeImageFile } from '../../shared/data/image.js';
import { selectBackend } from '../../shared/tf/backend.js';
import { loadModel, modelMetadata } from '../../shared/train/model-io.js';
import { topClasses } from '../../shared/train/predict.js';

export function predictCommand(): Command {
  const cmd = new Command('predict')
    .description('the top classes of each image file under a saved model')
    .argument('<files...>', 'PNG, JPEG or WebP images; each is resized to the model input as training data were');
  cmd.requiredOption('--model-dir <dir>', 'folder with model.json and weights.bin (a run saves RUN_DIR/model)');
  cmd.option('--top <k>', 'how many classes to show per image', intOption('--top'), 3);
  cmd.option('--json', 'one JSON line per image instead of text');
  addRoleOptions(cmd, 'evaluate', [COMMON_OPTIONS]);
  cmd.action(async (files: string[], opts: Record<string, unknown>) => {
    await selectBackend(readBackend(opts));
    const model = await loadModel(String(opts.modelDir));
    const meta = modelMetadata(model);
    const shape = meta.inputShape as unknown as [number, number, number];
    for (const file of files) {
      const { pixels } = await decodeImageFile(file, { shape });
      const top = topClasses(model, pixels, shape, meta.classNames, Number(opts.top));
      const text = top.map((c) => `${c.name} ${(100 * c.probability).toFixed(1)}%`).join(', ');
      process.stdout.write(opts.json ? `${JSON.stringify({ file, top })}\n` : `${file}: ${text}\n`);
    }
    model.dispose();
  });
  return cmd;
}
