/**
 * `--scale-lr` is on by default in a cluster (coordinator, launch) and off for `ringtrain train`; `--no-scale-lr`
 * turns it off, and launch forwards that choice to the coordinator.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Command } from 'commander';
import { addRoleOptions, forwardedArgs, readTrainConfig } from '../shared/cli/options.js';

function parse(role: 'train' | 'coordinator' | 'launch', args: string[]): Record<string, unknown> {
  const cmd = addRoleOptions(new Command(role).exitOverride(), role);
  cmd.parse(args, { from: 'user' });
  return cmd.opts();
}

describe('--scale-lr defaults', () => {
  it('is on in a cluster and off in one process', () => {
    assert.equal(readTrainConfig(parse('coordinator', []), 'coordinator').scaleLr, true);
    assert.equal(readTrainConfig(parse('launch', []), 'launch').scaleLr, true);
    assert.equal(readTrainConfig(parse('train', []), 'train').scaleLr, false);
    assert.equal(readTrainConfig(parse('train', ['--scale-lr']), 'train').scaleLr, true);
  });

  it('--no-scale-lr turns it off, and launch forwards that to the coordinator', () => {
    const off = parse('launch', ['--no-scale-lr']);
    assert.equal(readTrainConfig(off, 'launch').scaleLr, false);
    assert.ok(forwardedArgs(off, 'coordinator').includes('--no-scale-lr'));
    assert.equal(readTrainConfig(parse('coordinator', ['--no-scale-lr']), 'coordinator').scaleLr, false);
    const on = parse('launch', ['--scale-lr']);
    assert.ok(forwardedArgs(on, 'coordinator').includes('--scale-lr'));
    assert.ok(!forwardedArgs(on, 'coordinator').includes('--no-scale-lr'));
  });
});
