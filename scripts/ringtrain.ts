#!/usr/bin/env node
/** The `ringtrain` command line: one program, one subcommand per role. */
import { Command } from 'commander';
import { RingtrainError } from '../shared/errors.js';
import { coordinatorCommand } from '../coordinator/cli.js';
import { workerCommand } from '../worker/cli.js';
import { launchCommand } from '../launcher/launch.js';
import { evaluateCommand } from './cli/evaluate.js';
import { trainCommand } from './cli/train.js';
import { nativeCommands } from './cli/native.js';
import { dashboardCommand } from './cli/dashboard.js';

const program = new Command('ringtrain')
  .description('distributed data-parallel training on Node.js: a coordinator, WebSocket workers and a ring allreduce')
  .showHelpAfterError();
program.addCommand(trainCommand());
program.addCommand(coordinatorCommand());
program.addCommand(workerCommand());
program.addCommand(launchCommand());
for (const c of nativeCommands()) program.addCommand(c);
program.addCommand(dashboardCommand());
program.addCommand(evaluateCommand());

// horovodrun spells it -np; commander's short flags are one letter, so accept that spelling here.
program.parseAsync(process.argv.map((a) => (a === '-np' ? '--np' : a))).catch((err: unknown) => {
  if (err instanceof RingtrainError) {
    process.stderr.write(`ringtrain: ${err.message} [${err.code}]\n`);
    if (err.cause) process.stderr.write(`  caused by: ${(err.cause as Error).message ?? String(err.cause)}\n`);
  } else {
    process.stderr.write(`ringtrain: ${(err as Error)?.stack ?? String(err)}\n`);
  }
  process.exitCode = 1;
});
