/**
 * A TCP proxy in front of one worker's ring listener, so the chaos run can cut that worker's ring links without
 * touching the processes: `cut()` resets every connection passing through it (both directions at once).
 */
import net from 'node:net';

export interface RingProxy {
  port: number;
  /** Connections currently passing through. */
  readonly open: number;
  /** Destroy every connection passing through (peers see a reset link); new connections are still forwarded. */
  cut(): number;
  close(): Promise<void>;
}

export async function startProxy(listenHost: string, port: number, targetHost: string): Promise<RingProxy> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, targetHost);
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of pair) {
      s.setNoDelay(true);
      s.on('error', drop);
      s.on('close', drop);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, listenHost, () => resolve());
  });
  return {
    port,
    get open() {
      return pairs.size;
    },
    cut() {
      const n = pairs.size;
      for (const [a, b] of [...pairs]) {
        a.resetAndDestroy();
        b.resetAndDestroy();
      }
      pairs.clear();
      return n;
    },
    close() {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
