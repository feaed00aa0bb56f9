// Throughput of the hardened stream parser (src/xmpp/parser.ts), the server's hot path.
// Run: node --import tsx bench/parser.ts [stanzas] [chunkBytes]
import { StreamParser } from '../src/xmpp/parser.js';

const N = Number(process.argv[2] ?? 100_000);
const CHUNK = Number(process.argv[3] ?? 4096);
const header =
  "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='b' version='1.0'>";
const stanza = "<message to='a@b' type='chat' id='x'><body>hello</body></message>";
const input = Buffer.from(header + stanza.repeat(N));

function run(): { stanzas: number; ms: number } {
  let stanzas = 0;
  let failed: unknown;
  const parser = new StreamParser({
    onStreamStart() {},
    onStanza() {
      stanzas++;
    },
    onStreamEnd() {},
    onStreamError(err) {
      failed = err;
    },
  });
  const t0 = process.hrtime.bigint();
  for (let off = 0; off < input.length; off += CHUNK) parser.write(input.subarray(off, off + CHUNK));
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (failed) throw failed;
  return { stanzas, ms };
}

run(); // warm-up (JIT)
const times: number[] = [];
for (let i = 0; i < 5; i++) {
  const r = run();
  if (r.stanzas !== N) throw new Error(`expected ${N} stanzas, got ${r.stanzas}`);
  times.push(r.ms);
}
const ms = times.sort((a, b) => a - b)[2] as number; // median of 5
const stanzas = N;
const mb = input.length / (1024 * 1024);
console.log(
  `${stanzas} stanzas, ${mb.toFixed(2)} MiB in ${CHUNK}-byte chunks: ${ms.toFixed(0)} ms, ` +
    `${Math.round(stanzas / (ms / 1000)).toLocaleString('en-US')} stanzas/s, ${(mb / (ms / 1000)).toFixed(1)} MiB/s`,
);
