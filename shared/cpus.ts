/** The CPUs a process may run on, as the kernel reports them. */
import { readFileSync } from 'node:fs';

/**
 * This process's allowed CPUs in Linux list syntax (`0-1`, `0-3,8-11`), from /proc/self/status; undefined where the
 * kernel does not say (not Linux). Read for the logs (a launch's CPU binding) and for sharing the CPUs out.
 */
export function allowedCpus(): string | undefined {
  try {
    return /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}
