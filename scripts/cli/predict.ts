/** `ringtrain predict`: the top classes of image files under a saved model (a run's `model/` folder). */
import { Command } from 'commander';
import { addRoleOptions, intOption, readBackend } from '../../shared/cli/options.js';
import { COMMON_OPTIONS } from '../../shared/cli/table.js';
import { ConfigError } from '../../shared/errors.js';
import { selectBackend } from '../../shared/tf/backend.js';
import { loadModel, modelMetadata } from '../../shared/train/model-io.js';
import { topClasses } from '../../shared/train/predict.js';

type Shape = readonly [number, number, number];
type Decoder = (file: string, options: { shape: Shape }) => Promise<{ pixels: Uint8Array; shape: Shape }>;

/** shared/data/image.ts's decoder (sharp), resizing and converting each file to the model's input shape. */
async function imageDecoder(): Promise<Decoder> {
  // A variable specifier: the image module comes with the data formats and is loaded only by this command.
  const specifier = '../../shared/data/image.js';
  const mod = (await import(specifier).catch(() => ({}))) as { decodeImageFile?: Decoder };
  if (!mod.decodeImageFile) throw new ConfigError('this build has no image decoder (shared/data/image.ts)');
  return mod.decodeImageFile;
}

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
    const decode = await imageDecoder();
    const shape = meta.inputShape as unknown as Shape;
    for (const file of files) {
      const { pixels } = await decode(file, { shape });
      const top = topClasses(model, pixels, shape, meta.classNames, Number(opts.top));
      const text = top.map((c) => `${c.name} ${(100 * c.probability).toFixed(1)}%`).join(', ');
      process.stdout.write(opts.json ? `${JSON.stringify({ file, top })}\n` : `${file}: ${text}\n`);
    }
    model.dispose();
  });
  return cmd;
}
