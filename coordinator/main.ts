#!/usr/bin/env node
/** Thin entry: `node dist/coordinator/main.js [options]` is `ringtrain coordinator [options]`. */
import { coordinatorCommand } from './cli.js';

await coordinatorCommand().parseAsync(process.argv);
