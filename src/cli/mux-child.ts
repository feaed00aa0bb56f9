// Entry point of an embedded mux process (forked by MuxSupervisor): configuration, link address
// and name come from the environment; client sockets come from the parent over IPC.
import { validateConfig } from '../core/config.js';
import { createLogger } from '../core/logger.js';
import { runMux } from '../mux/index.js';
import { muxSecret } from './secrets.js';

async function main(): Promise<void> {
  const config = validateConfig(JSON.parse(process.env.PARLEY_MUX_CONFIG ?? '{}'));
  const [host, port] = (process.env.PARLEY_MUX_LINK ?? '').split(/:(?=\d+$)/);
  const name = process.env.PARLEY_MUX_NAME ?? `mux-${process.pid}`;
  const log = createLogger({ level: config.log.level }).child({ mux: name });
  process.on('uncaughtException', (err) => log.fatal({ err }, 'uncaught exception (kept running)'));
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));
  // The server process owns us: when it goes, we go (no orphaned muxes holding ports).
  process.on('disconnect', () => process.exit(0));
  // Embedded muxes link over loopback: plaintext, or TLS pinned to the server's certificate when
  // the server asks for it (mux.linkTls: on on a loopback link address).
  const pin = process.env.PARLEY_MUX_LINK_TLS;
  const linkTls = pin ? { fingerprint: pin } : ('off' as const);
  const mux = await runMux({ config, link: { host: host as string, port: Number(port) }, linkTls, secret: muxSecret(config), name, log, listen: 'ipc' });
  const announce = async () => {
    for (;;) {
      await mux.waitLink();
      process.send?.({ type: 'parley:ready' });
      while (mux.linkUp) await new Promise((r) => setTimeout(r, 250));
      process.send?.({ type: 'parley:link-down' });
    }
  };
  void announce();
  process.once('SIGTERM', () => {
    void mux.stop().then(() => process.exit(0));
  });
}

main().catch((err) => {
  process.stderr.write(`mux failed to start: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
