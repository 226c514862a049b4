/** Small address helpers shared by every process. */

/** A host as it goes before `:port` in a URL or a `host:port` name: IPv6 addresses in brackets. */
export function bracketHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}
