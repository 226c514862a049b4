/**
 * Named session phases with one transition function (the shape of ws's receiver, `switch (this._state)`): every
 * phase lists where it may go next, and any other move throws IllegalTransitionError instead of silently leaving
 * the session in a state no handler expects.
 */
import { IllegalTransitionError } from './errors.js';

export type Transitions<P extends string> = { readonly [K in P]: readonly P[] };

export class PhaseMachine<P extends string> {
  private current: P;

  constructor(
    private readonly name: string,
    initial: P,
    private readonly transitions: Transitions<P>,
    private readonly onChange?: (from: P, to: P) => void,
  ) {
    this.current = initial;
  }

  get phase(): P {
    return this.current;
  }

  is(...phases: P[]): boolean {
    return phases.includes(this.current);
  }

  /** Move to `next`; staying in the same phase is a transition too, and must be listed to be legal. */
  to(next: P): void {
    if (!this.transitions[this.current].includes(next)) throw new IllegalTransitionError(this.name, this.current, next);
    const from = this.current;
    this.current = next;
    this.onChange?.(from, next);
  }
}
