/** Parse a subcommand's arguments as the CLI would, without running it: the options its action would get. */
import assert from 'node:assert/strict';
import type { Command } from 'commander';

export async function parsedBy(make: () => Command, args: string[]): Promise<Record<string, unknown>> {
  const cmd = make();
  let opts: Record<string, unknown> | undefined;
  cmd.exitOverride().configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  cmd.action((o: Record<string, unknown>) => {
    opts = o;
  });
  await cmd.parseAsync(args, { from: 'user' });
  assert.ok(opts, 'the action ran');
  return opts;
}
