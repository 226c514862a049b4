/**
 * Process exit codes, in one place: what ringtrain's processes exit with, and how a child's exit is read back.
 * A child ended by a signal is reported as 128 + the signal's number, as shells do.
 */
import os from 'node:os';

export const EXIT_CODES = {
  ok: 0,
  failed: 1,
  /** The worker script on a host is misconfigured (no token on stdin, no address on the interface): EX_CONFIG. */
  scriptConfig: 78,
  /** Interrupted by SIGINT or SIGTERM, as a shell reports Ctrl-C. */
  interrupted: 130,
} as const;

/** How a run ended, as the coordinator process's exit code. */
export function exitCodeOfOutcome(outcome: 'finished' | 'interrupted' | string): number {
  return outcome === 'finished'
    ? EXIT_CODES.ok
    : outcome === 'interrupted'
      ? EXIT_CODES.interrupted
      : EXIT_CODES.failed;
}

/** A child's 'exit'/'close' event arguments as one code. */
export function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return 128 + (signal ? (os.constants.signals[signal] ?? 0) : 0);
}

/** `exit code 3`, or `killed by SIGKILL` for 137. */
export function describeExit(code: number): string {
  if (code > 128) {
    const name = Object.entries(os.constants.signals).find(([, n]) => n === code - 128)?.[0];
    if (name) return `killed by ${name}`;
  }
  return `exit code ${code}`;
}
