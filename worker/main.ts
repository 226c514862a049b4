#!/usr/bin/env node
/** Thin entry: `node dist/worker/main.js [options]` is `ringtrain worker [options]`. */
import { workerCommand } from './cli.js';

await workerCommand().parseAsync(process.argv);
