/** Who may not join a run, as a pure decision: a worker whose data or backend differs from the run's. */
import type { DatasetInfo, HelloMessage } from '../shared/wire/protocol.js';
import { datasetRefusal } from './data-plan.js';

/** Why `hello`'s worker cannot be part of this run (undefined: it can). */
export function joinRefusal(
  hello: HelloMessage,
  dataInfo: DatasetInfo,
  ringBackend: string | undefined,
): string | undefined {
  const dataset = datasetRefusal(hello, dataInfo);
  if (dataset) return dataset;
  // Backends round the optimizer's update differently, so a mixed ring would drift apart silently.
  if (ringBackend !== undefined && hello.backend !== ringBackend)
    return `backend ${hello.backend} differs from the ring's ${ringBackend}: start every worker with one --backend`;
  return undefined;
}
