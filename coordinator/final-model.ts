/**
 * Keeping a cluster run's result: once training is done, rank 0's final weights are fetched over the control link
 * (the same `requestWeights` / `weights` exchange a checkpoint uses) and saved as the run's model, before the
 * coordinator stops the workers. A rank 0 that leaves or never answers ends the run without a model, never hangs it.
 */
import type { ControlLink } from '../shared/control-link.js';
import type { Logger } from '../shared/log.js';
import type { CoordinatorModel } from '../shared/train/run-model.js';
import { bytesToFloat32, type MessageOf } from '../shared/wire/protocol.js';

export const FINAL_MODEL_TIMEOUT_MS = 60_000;

export class FinalModelFetch {
  private take?: (weights: Uint8Array | undefined) => void;

  constructor(
    private readonly model: CoordinatorModel,
    private readonly rank0: ControlLink,
    private readonly gen: number,
    private readonly log: Logger,
    /** One line for the person running it (the coordinator's notices). */
    private readonly say: (line: string) => void,
    private readonly timeoutMs = FINAL_MODEL_TIMEOUT_MS,
  ) {}

  /** Fetch and save; resolves with a note for the run's end reason ('' when the model was saved). */
  async fetch(testAccuracy: number | undefined): Promise<string> {
    const weights = await new Promise<Uint8Array | undefined>((resolve) => {
      this.take = resolve;
      const timer = setTimeout(() => resolve(undefined), this.timeoutMs);
      timer.unref();
      void this.rank0.closed.then(() => resolve(undefined));
      this.rank0.send({ type: 'requestWeights', gen: this.gen });
    });
    this.take = undefined;
    if (!weights) {
      this.log.warn({ timeoutMs: this.timeoutMs }, 'rank 0 did not send its final weights; no model saved');
      return '; the final model was not received';
    }
    try {
      const dir = await this.model.saveFinal(bytesToFloat32(weights), testAccuracy);
      this.log.info({ dir }, 'model saved');
      this.say(`model saved in ${dir}`);
      return '';
    } catch (err) {
      this.log.error({ err }, 'saving the model failed');
      return `; saving the model failed: ${(err as Error).message}`;
    }
  }

  /**
   * A `weights` message while the fetch is on: true when this object consumed it. A reply older than the final
   * step (a checkpoint request answered late) is dropped; the final one follows it.
   */
  offer(m: MessageOf<'weights'>, finalStep: number): boolean {
    if (!this.take) return false;
    if (m.gen === this.gen && m.step >= finalStep) this.take(m.weights);
    return true;
  }
}
