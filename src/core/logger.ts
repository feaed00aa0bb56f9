// Structured logging (pino). Secrets and message content never reach the log: the redaction list
// covers passwords, SASL payloads, tokens, assertions and bodies wherever they appear in a record.
import { pino, type Logger } from 'pino';

export type { Logger };

const REDACT = [
  'password', '*.password', 'sasl', '*.sasl', 'token', '*.token', 'assertion', '*.assertion',
  'body', '*.body', 'secret', '*.secret', 'stanza', '*.stanza',
];

export function createLogger(opts: { level?: string; destination?: NodeJS.WritableStream } = {}): Logger {
  return pino(
    { level: opts.level ?? process.env.PARLEY_LOG_LEVEL ?? 'info', redact: { paths: REDACT, censor: '[redacted]' } },
    (opts.destination as pino.DestinationStream | undefined) ?? pino.destination(2),
  );
}

/** A logger that drops everything (tests that do not care about logs). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
