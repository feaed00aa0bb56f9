// Minimal typings for @xmpp/client (the package ships none); tests only.
declare module '@xmpp/client' {
  import type { Element } from 'ltx';
  export interface Client {
    start(): Promise<{ toString(): string }>;
    stop(): Promise<void>;
    send(el: Element): Promise<void>;
    on(event: 'stanza', fn: (el: Element) => void): void;
    on(event: string, fn: (...args: unknown[]) => void): void;
    jid: { toString(): string } | null;
    socket: unknown;
  }
  export function client(options: Record<string, unknown>): Client;
  export function xml(name: string, attrs?: Record<string, string | undefined> | null, ...children: (Element | string)[]): Element;
}
