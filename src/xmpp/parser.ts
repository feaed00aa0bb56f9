/*
 * Parley's one hardened XML stream parser (RFC 6120 §4 "XML Streams" and §11 "XML Usage").
 *
 * Every transport (TCP, mux, BOSH, WebSocket) and every importer goes through this file, so it
 * enforces the "XML and streams" rows of /work/shared/HARDENING.md:
 *   - RFC 6120 §11.1 restricted XML: no DOCTYPE, entity declarations, processing instructions or
 *     comments (-> restricted-xml); nothing but the 5 predefined entities and character references
 *     is ever expanded (saxes does not process DTDs at all).
 *   - strict UTF-8 (§11.6) and XML 1.0 characters (-> not-well-formed), XML declaration only at the
 *     very start with version 1.0 / encoding UTF-8 (-> unsupported-version / unsupported-encoding).
 *   - size, depth and attribute-count limits (-> policy-violation), counted on raw bytes including
 *     bytes not yet parsed, and enforced before large data reaches saxes.
 *   - the tree is built with an explicit stack: nothing here recurses on attacker-controlled depth.
 *   - a second XML declaration or `<stream:stream>` mid-stream is a stream error, never a reset; only
 *     the session resets the parser (after STARTTLS / SASL success), discarding pipelined bytes.
 *
 * Implementation: bytes -> fatal streaming TextDecoder -> saxes (namespace-aware, XML 1.0 forced) ->
 * ltx Elements. Any violation is thrown as a StreamError from inside the saxes callbacks, which
 * unwinds saxes.write(); the parser is then dead and reports the error exactly once.
 */
import { Element } from 'ltx';
import { SaxesParser } from 'saxes';
import type { SaxesAttributeNS, SaxesTagNS, XMLDecl } from 'saxes';
import { StreamError } from './errors.js';
import { NS } from './ns.js';

export interface StreamParserLimits {
  /** Raw bytes of one top-level stanza, including bytes received but not yet parsed (256 KiB). */
  maxStanzaBytes: number;
  /** Element levels inside a stanza; the stanza itself is level 1 (32). */
  maxDepth: number;
  /** Attributes, including namespace declarations, on one element (64). */
  maxAttributes: number;
  /** Raw bytes of the XML declaration plus stream header (8 KiB). */
  maxHeaderBytes?: number;
}

export interface StreamParserHandlers {
  /** The stream header; attrs as written (qualified names: 'to', 'xml:lang', 'xmlns:stream', ...). */
  onStreamStart(attrs: Record<string, string>, info: { name: string; ns: string; defaultNs: string }): void;
  /** Every complete top-level child of the stream. */
  onStanza(el: Element): void;
  /** `</stream:stream>` */
  onStreamEnd(): void;
  /** Called at most once; the parser ignores all input afterwards. */
  onStreamError(err: StreamError): void;
}

export const DEFAULT_PARSER_LIMITS: Readonly<Required<StreamParserLimits>> = Object.freeze({
  maxStanzaBytes: 262144,
  maxDepth: 32,
  maxAttributes: 64,
  maxHeaderBytes: 8192,
});

type SaxOptions = { xmlns: true; forceXMLVersion: true; defaultXMLVersion: '1.0' };

/** Thrown from saxes callbacks to unwind saxes.write() without reporting anything. */
const STOP: unique symbol = Symbol('parley.parser.stop');

/** Longest piece of a saxes message echoed in a <text/> (saxes messages can quote input names). */
const MAX_ERROR_TEXT = 200;

const WHITESPACE_ONLY = /^[ \t\r\n]*$/;

const NO_ATTRIBUTES = Object.freeze(Object.create(null));

function resolveLimits(limits?: Partial<StreamParserLimits>): Required<StreamParserLimits> {
  const out = { ...DEFAULT_PARSER_LIMITS };
  if (limits) {
    for (const key of Object.keys(out) as (keyof StreamParserLimits)[]) {
      const v = limits[key];
      if (v !== undefined) {
        if (!Number.isFinite(v) || v < 1) throw new RangeError(`parser limit ${key} must be a positive number`);
        out[key] = Math.floor(v);
      }
    }
  }
  return out;
}

/** Assign an attribute on a plain object without tripping the `__proto__` setter. */
function setAttr(attrs: Record<string, string>, name: string, value: string): void {
  if (name === '__proto__') {
    Object.defineProperty(attrs, name, { value, enumerable: true, writable: true, configurable: true });
  } else {
    attrs[name] = value;
  }
}

/**
 * saxes reports every problem as a plain Error with a message; pick the RFC 6120 condition. The
 * messages are stable in saxes 6 (the last release); anything unrecognised is not-well-formed.
 */
function mapSaxesError(err: Error): StreamError {
  const msg = err.message.replace(/^\d+:\d+: /, '');
  const text = msg.length > MAX_ERROR_TEXT ? `${msg.slice(0, MAX_ERROR_TEXT)}...` : msg;
  if (msg.includes('doctype declaration')) return new StreamError('restricted-xml', 'DOCTYPE is not allowed');
  // "an XML declaration must be at the start" / "the XML declaration must appear at the start":
  // a second (or misplaced) XML declaration is a processing instruction in all but name.
  if (msg.includes('must be at the start') || msg.includes('must appear at the start')) {
    return new StreamError('restricted-xml', 'XML declaration only allowed at the start of the stream');
  }
  if (msg.includes('processing instruction')) return new StreamError('restricted-xml', 'processing instructions are not allowed');
  if (msg.includes('malformed comment')) return new StreamError('restricted-xml', 'comments are not allowed');
  // `<!` followed by anything but `--`, `[CDATA[` or `DOCTYPE`: a markup declaration (<!ENTITY ...).
  if (msg.includes('incorrect syntax')) return new StreamError('restricted-xml', 'markup declarations are not allowed');
  if (msg.includes('version number must match')) return new StreamError('unsupported-version', 'XML version must be 1.0');
  if (msg.includes('encoding value must match')) return new StreamError('unsupported-encoding', 'encoding must be UTF-8');
  return new StreamError('not-well-formed', text);
}

interface EngineSink {
  streamStart?(attrs: Record<string, string>, info: { name: string; ns: string; defaultNs: string }): void;
  element(el: Element): void;
  streamEnd?(): void;
}

/**
 * saxes with its event handlers on the prototype where saxes calls them as `this.<event>Handler(...)`:
 * defined once here instead of as closures per parser, which saves eight closures (and, under tsx,
 * their name properties) per connection. Handler slots are never assigned through saxes' on(): its
 * computed-key stores turn the parser into a slow dictionary object after about six (3-4x slower).
 */
class Sax extends SaxesParser<SaxOptions> {
  engine!: Engine;

  constructor(opt: SaxOptions) {
    super(opt);
    // saxes builds a 50-entry table of its own prototype's state methods per instance; they are the
    // same for every instance, so all parsers share the first one's (0.4 KB per connection).
    const self = this as unknown as { stateTable: unknown };
    if (sharedStateTable === null) sharedStateTable = self.stateTable;
    else self.stateTable = sharedStateTable;
  }
}
let sharedStateTable: unknown = null;
/** saxes 6's per-event handler slots (private in its typings; what SaxesParser.on() assigns). */
interface SaxesHandlerSlots {
  errorHandler(this: Sax, err: Error): void;
  xmldeclHandler(this: Sax, decl: XMLDecl): void;
  doctypeHandler(this: Sax): void;
  commentHandler(this: Sax): void;
  piHandler(this: Sax): void;
  openTagStartHandler(this: Sax): void;
  attributeHandler(this: Sax, attr: SaxesAttributeNS): void;
  openTagHandler(this: Sax, tag: SaxesTagNS): void;
  closeTagHandler(this: Sax): void;
  textHandler(this: Sax, text: string): void;
  cdataHandler(this: Sax, cdata: string): void;
}
const saxProto = Sax.prototype as unknown as SaxesHandlerSlots;
saxProto.xmldeclHandler = function (this: Sax, decl) {
  this.engine.onXmlDecl(decl);
};
saxProto.doctypeHandler = function (this: Sax) {
  this.engine.restricted('DOCTYPE is not allowed');
};
saxProto.commentHandler = function (this: Sax) {
  this.engine.restricted('comments are not allowed');
};
saxProto.piHandler = function (this: Sax) {
  this.engine.restricted('processing instructions are not allowed');
};
saxProto.openTagStartHandler = function (this: Sax) {
  this.engine.onOpenTagStart();
};
saxProto.attributeHandler = function (this: Sax, attr) {
  this.engine.onAttribute(attr);
};
saxProto.openTagHandler = function (this: Sax, tag) {
  this.engine.onOpenTag(tag);
};
saxProto.cdataHandler = function (this: Sax, text) {
  this.engine.onText(text, 0); // RFC 6120 §11.1 allows CDATA: plain text
};

/**
 * The shared machinery. In 'stream' mode the root is the stream header and each child is emitted;
 * in 'document' mode (parseElement) the root element itself is emitted.
 */
class Engine {
  private sax!: Sax;
  private decoder!: TextDecoder;
  /** Open elements of the current stanza (stream mode) or document; never includes the stream root. */
  private stack: Element[] = [];
  private phase: 'prolog' | 'open' | 'closed' = 'prolog';
  /** Default namespace declared on the stream header. */
  private defaultNs = '';
  /** Prefixes (other than stream/xml) declared on the stream header, copied into stanzas that use them. */
  private headerNs: Record<string, string> = Object.create(null);
  private hasHeaderNs = false;
  // Attributes of the start tag being parsed, collected from saxes' attribute events (cheaper than
  // walking saxes' null-prototype attribute map). saxes validates them before the opentag event.
  private attrCount = 0;
  private attrs: Record<string, string> = {};
  private attrPrefixed = false;
  /** Bumped by reset(); lets a write in progress notice that its remaining bytes must be dropped. */
  private generation = 0;
  /**
   * A completed top-level element not yet handed out. saxes calls closetag *before* it checks that
   * the end-tag name matches (`<message></foo>`), so emission waits for the next saxes event (or the
   * end of the chunk); a mismatch error at the same position discards it instead.
   */
  private pending: Element | null = null;
  private pendingPos = 0;

  // Byte accounting (stream mode), in raw-byte offsets since the last fresh(). A "unit" is the
  // prolog + stream header, then each top-level element together with the whitespace before it.
  /** Raw bytes received, including bytes still inside the decoder or saxes' own buffers. */
  private received = 0;
  /** Offset where the current unit began (end of the header or of the previous stanza). */
  private unitStart = 0;
  /** Bytes the decoder holds (an incomplete UTF-8 sequence at the end of the last slice). */
  private held = 0;
  /** UTF-16 units written to the current saxes instance; saxes.position is relative to this. */
  private charsWritten = 0;
  // The string currently inside saxes.write(), to map saxes positions back to raw byte offsets.
  private cur = '';
  private curBase = 0;
  private curStartByte = 0;
  private curAscii = true;
  private scanLocal = 0;
  private scanBytes = 0;
  /** Char index in `cur` of the last boundary parsed from it, or -1. */
  private boundaryLocal = -1;
  /**
   * Everything since the last boundary is whitespace already consumed by saxes (keepalives). Such
   * bytes are not counted against the stanza limit, and further leading whitespace is skipped
   * without reaching saxes, so a stream idling on whitespace pings for months neither hits the
   * limit nor grows saxes' text buffer.
   */
  private idle = false;

  constructor(
    private readonly mode: 'stream' | 'document',
    readonly limits: Required<StreamParserLimits>,
    private readonly sink: EngineSink,
  ) {
    this.fresh();
  }

  /** New saxes parser and decoder; drops everything buffered. */
  fresh(): void {
    this.generation++;
    this.decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }); // saxes skips a leading BOM itself
    this.sax = this.makeSax();
    this.stack = [];
    this.phase = 'prolog';
    this.defaultNs = '';
    this.headerNs = Object.create(null);
    this.hasHeaderNs = false;
    this.received = 0;
    this.unitStart = 0;
    this.held = 0;
    this.charsWritten = 0;
    this.cur = '';
    this.idle = false;
    this.pending = null;
  }

  private makeSax(): Sax {
    // forceXMLVersion: an `<?xml version='1.1'?>` must never switch saxes to XML 1.1 character rules
    // before our xmldecl handler rejects it.
    const sax = new Sax({ xmlns: true, forceXMLVersion: true, defaultXMLVersion: '1.0' });
    sax.engine = this;
    // saxes calls these three detached (`handler(x)`, not `this.handler(x)`): own closures.
    const slots = sax as unknown as SaxesHandlerSlots;
    slots.errorHandler = (err) => this.onSaxError(err);
    slots.closeTagHandler = () => this.onCloseTag();
    slots.textHandler = (text) => this.onText(text, 1);
    return sax;
  }

  /** saxes' error event: see `pending`; then the condition for the error. */
  onSaxError(err: Error): never {
    if (this.pending !== null) {
      if (this.sax.position === this.pendingPos) this.pending = null; // its end tag did not match
      else this.flush();
    }
    throw mapSaxesError(err);
  }

  onAttribute(attr: SaxesAttributeNS): void {
    // Counted as they arrive so thousands of attributes/xmlns declarations are cut off early.
    if (++this.attrCount > this.limits.maxAttributes) {
      throw new StreamError('policy-violation', `more than ${this.limits.maxAttributes} attributes on one element`);
    }
    setAttr(this.attrs, attr.name, attr.value);
    if (attr.prefix !== '' && attr.prefix !== 'xmlns') this.attrPrefixed = true;
  }

  // ---- saxes callbacks -------------------------------------------------------------------------

  /** Hand out the completed top-level element (see `pending`). */
  private flush(): void {
    const el = this.pending as Element;
    this.pending = null;
    const gen = this.generation;
    this.sink.element(el);
    // The handler called reset() (STARTTLS / SASL success): drop the rest of this chunk.
    if (gen !== this.generation) throw STOP;
  }

  restricted(what: string): never {
    if (this.pending !== null) this.flush();
    throw new StreamError('restricted-xml', what);
  }

  onXmlDecl(decl: XMLDecl): void {
    if (decl.version !== '1.0') throw new StreamError('unsupported-version', 'XML version must be 1.0');
    if (decl.encoding !== undefined && decl.encoding.toLowerCase() !== 'utf-8') {
      throw new StreamError('unsupported-encoding', 'encoding must be UTF-8');
    }
  }

  onOpenTagStart(): void {
    if (this.pending !== null) this.flush();
    // Checked on the name, before any attribute is parsed. The stack never holds the stream root.
    if (this.stack.length >= this.limits.maxDepth) {
      throw new StreamError('policy-violation', `elements nested deeper than ${this.limits.maxDepth}`);
    }
    this.attrCount = 0;
    this.attrs = {};
    this.attrPrefixed = false;
  }

  onOpenTag(tag: SaxesTagNS): void {
    if (this.mode === 'stream' && this.phase === 'prolog') {
      this.openStream(tag);
      return;
    }
    const stack = this.stack;
    if (tag.local === 'stream' && tag.uri === NS.STREAM && (this.mode === 'stream' || stack.length > 0)) {
      throw new StreamError('not-well-formed', 'stream header inside the stream');
    }
    const el = new Element(tag.name);
    const attrs = this.attrs;
    el.attrs = attrs;
    if (stack.length === 0) {
      // Stanzas inherit the stream's namespace; dropping the redundant declaration lets the same
      // tree be re-serialized onto a jabber:client or jabber:server stream.
      if (this.mode === 'stream' && attrs.xmlns === this.defaultNs) delete attrs.xmlns;
    } else {
      const parent = stack[stack.length - 1] as Element;
      el.parent = parent;
      parent.children.push(el);
    }
    stack.push(el);
    if (this.hasHeaderNs) this.importHeaderPrefixes(tag);
  }

  /**
   * A stanza may use a prefix bound only on the stream header (e.g. `db:` on s2s streams); copy that
   * declaration onto the top-level element so the stanza serializes on its own.
   */
  private importHeaderPrefixes(tag: SaxesTagNS): void {
    this.importPrefix(tag.prefix);
    if (!this.attrPrefixed) return;
    const src = tag.attributes;
    for (const name in src) {
      const p = (src[name] as SaxesAttributeNS).prefix;
      if (p !== '' && p !== 'xmlns') this.importPrefix(p);
    }
  }

  private importPrefix(prefix: string): void {
    if (prefix === '' || !(prefix in this.headerNs)) return;
    const key = `xmlns:${prefix}`;
    const stack = this.stack; // depth is bounded by maxDepth
    for (let i = stack.length - 1; i >= 0; i--) {
      if ((stack[i] as Element).attrs[key] !== undefined) return; // bound inside the stanza (or already copied)
    }
    setAttr((stack[0] as Element).attrs, key, this.headerNs[prefix] as string);
  }

  private openStream(tag: SaxesTagNS): void {
    if (tag.local !== 'stream' || tag.uri !== NS.STREAM) {
      throw new StreamError('invalid-namespace', `stream root must be <stream xmlns='${NS.STREAM}'>`);
    }
    this.defaultNs = tag.ns[''] ?? '';
    for (const prefix in tag.ns) {
      if (prefix !== '' && prefix !== 'stream' && prefix !== 'xml') {
        this.headerNs[prefix] = tag.ns[prefix] as string;
        this.hasHeaderNs = true;
      }
    }
    this.endUnit(this.limits.maxHeaderBytes, 'stream header too large');
    // saxes keeps the root tag open for the whole stream; it needs its name and namespace bindings
    // but not its attributes (about 0.7 KB per connection).
    (tag as { attributes: unknown }).attributes = NO_ATTRIBUTES;
    this.phase = 'open';
    const gen = this.generation;
    this.sink.streamStart?.(this.attrs, { name: tag.name, ns: tag.uri, defaultNs: this.defaultNs });
    if (gen !== this.generation) throw STOP;
  }

  onCloseTag(): void {
    if (this.pending !== null) this.flush();
    const stack = this.stack;
    if (stack.length === 0) {
      // Only reachable in stream mode: saxes closes the root, i.e. </stream:stream>.
      this.phase = 'closed';
      this.sink.streamEnd?.();
      throw STOP; // anything after the end of the stream is ignored
    }
    const el = stack.pop() as Element;
    if (stack.length !== 0) return;
    if (this.mode === 'stream') this.endUnit(this.limits.maxStanzaBytes, `stanza larger than ${this.limits.maxStanzaBytes} bytes`);
    this.pending = el;
    this.pendingPos = this.sax.position;
  }

  /** `back`: 1 for text, which saxes reports on reading the '<' that ends it; 0 for CDATA. */
  onText(text: string, back: number): void {
    if (this.pending !== null) this.flush();
    const stack = this.stack;
    if (stack.length === 0) {
      // Between stanzas only whitespace keepalives are allowed (saxes checks the prolog itself).
      if (!WHITESPACE_ONLY.test(text)) throw new StreamError('not-well-formed', 'text outside of a stanza');
      // Keepalives are not part of the next stanza: its size counts from its '<'.
      if (this.mode === 'stream' && this.phase === 'open') {
        this.unitStart = this.byteOffset(this.sax.position - this.curBase - back);
      }
      return;
    }
    const children = (stack[stack.length - 1] as Element).children;
    const last = children.length - 1;
    if (last >= 0 && typeof children[last] === 'string') children[last] = (children[last] as string) + text;
    else children.push(text);
  }

  // ---- byte accounting -------------------------------------------------------------------------

  /** Raw bytes of the unit in progress, parsed or not. */
  get bytesBuffered(): number {
    return this.received - this.unitStart;
  }

  /**
   * A top-level boundary (end of the header or of a stanza) was just parsed at saxes' current
   * position: check the finished unit's exact size (it may have arrived within one slice), then
   * start the next unit there.
   */
  private endUnit(limit: number, what: string): void {
    const local = this.sax.position - this.curBase;
    const boundary = this.byteOffset(local);
    if (boundary - this.unitStart > limit) throw new StreamError('policy-violation', what);
    this.unitStart = boundary;
    this.boundaryLocal = local;
  }

  /** Raw byte offset of char index `local` of `cur`; calls must not go backwards within a slice. */
  private byteOffset(local: number): number {
    if (this.curAscii) return this.curStartByte + local;
    // Incremental, so a chunk with many stanzas is still measured in one pass overall.
    this.scanBytes += Buffer.byteLength(this.cur.slice(this.scanLocal, local), 'utf8');
    this.scanLocal = local;
    return this.curStartByte + this.scanBytes;
  }

  private currentLimit(): number {
    return this.phase === 'prolog' ? this.limits.maxHeaderBytes : this.limits.maxStanzaBytes;
  }

  // ---- input -----------------------------------------------------------------------------------

  /** Feed raw bytes (stream mode). Throws StreamError; the caller marks the engine dead. */
  feed(chunk: Uint8Array): void {
    const gen = this.generation;
    const len = chunk.length;
    let off = 0;
    while (off < len) {
      if (this.idle) {
        // Keepalive whitespace between stanzas: nothing for saxes to do (a short loop, it stops at
        // the first other byte).
        let i = off;
        for (let c = chunk[i]; c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09; c = chunk[++i]);
        this.received += i - off;
        this.unitStart += i - off;
        off = i;
        if (off === len) return;
      }
      // Hand saxes at most enough bytes to cross the limit by one: an oversized stanza is refused
      // without saxes ever buffering much more than the limit, however big the chunk.
      const room = Math.max(1, this.currentLimit() - this.bytesBuffered + 1);
      const end = len - off <= room ? len : off + room;
      const bytes = off === 0 && end === len ? chunk : chunk.subarray(off, end);
      off = end;

      let s: string;
      try {
        s = this.decoder.decode(bytes, { stream: true });
      } catch {
        throw new StreamError('not-well-formed', 'invalid UTF-8');
      }
      // Fast path: nothing held before and one UTF-16 unit per byte means the slice is pure ASCII.
      const ascii = this.held === 0 && s.length === bytes.length;
      const sBytes = ascii ? s.length : Buffer.byteLength(s, 'utf8');
      // s starts with the characters completed from bytes held back from the previous slice.
      const startByte = this.received - this.held;
      this.received += bytes.length;
      this.held += bytes.length - sBytes;

      if (s.length !== 0) {
        this.cur = s;
        this.curBase = this.charsWritten;
        this.curStartByte = startByte;
        this.boundaryLocal = -1;
        this.curAscii = ascii;
        this.scanLocal = 0;
        this.scanBytes = 0;
        this.charsWritten += s.length;
        try {
          this.sax.write(s);
          if (this.pending !== null) this.flush();
        } catch (err) {
          if (err !== STOP) throw err;
        }
        this.cur = '';
        // reset() from a handler, or </stream:stream>: the rest of the input is discarded.
        if (gen !== this.generation || this.phase === 'closed') return;
        // Between stanzas with only whitespace since the last boundary? (The regex stops at the
        // first non-whitespace character, normally the first one.)
        if (this.phase === 'open' && this.stack.length === 0 && this.held === 0 && (this.boundaryLocal >= 0 || this.idle)) {
          this.idle = WHITESPACE_ONLY.test(this.boundaryLocal >= 0 ? s.slice(this.boundaryLocal) : s);
          if (this.idle) this.unitStart = this.received;
        } else {
          this.idle = false;
        }
      } else {
        this.idle = false; // bytes held by the decoder: not whitespace
      }
      // The unit still open at the end of the slice (e.g. an endless attribute value).
      if (this.bytesBuffered > this.currentLimit()) {
        throw new StreamError(
          'policy-violation',
          this.phase === 'prolog' ? 'stream header too large' : `stanza larger than ${this.limits.maxStanzaBytes} bytes`,
        );
      }
    }
  }

  get ended(): boolean {
    return this.phase === 'closed';
  }

  /** Parse a whole document (document mode). Throws StreamError. */
  parseDocument(text: string): void {
    this.sax.write(text);
    this.sax.close(); // reports unclosed elements, a missing root or trailing junk
    if (this.pending !== null) this.flush();
  }
}

function toStreamError(err: unknown): StreamError {
  if (err instanceof StreamError) return err;
  // A non-StreamError can only come from a handler bug (or a saxes invariant): fail closed.
  return new StreamError('internal-server-error');
}

/**
 * Incremental parser for one XMPP stream. write() never throws; every problem is reported once
 * through handlers.error().
 */
export class StreamParser implements EngineSink {
  private readonly engine: Engine;
  private handlers: StreamParserHandlers;
  private failed = false;
  private writing = false;
  /** Chunks written re-entrantly from a handler; processed after the current chunk. */
  private queue: Uint8Array[] = [];

  constructor(handlers: StreamParserHandlers, limits?: Partial<StreamParserLimits>) {
    this.handlers = handlers;
    this.engine = new Engine('stream', resolveLimits(limits), this);
  }

  /** Hands the rest of the stream to another sink (XEP-0198 resumption moves a stream to the resumed session). */
  setHandlers(handlers: StreamParserHandlers): void {
    this.handlers = handlers;
  }

  /** @internal engine sink */
  streamStart(attrs: Record<string, string>, info: { name: string; ns: string; defaultNs: string }): void {
    this.handlers.onStreamStart(attrs, info);
  }

  /** @internal engine sink */
  element(el: Element): void {
    this.handlers.onStanza(el);
  }

  /** @internal engine sink */
  streamEnd(): void {
    this.handlers.onStreamEnd();
  }

  /**
   * Raw bytes of the unit in progress (the stream header, or the next stanza from its '<'; bytes after
   * the previous stanza while they are not known to be whitespace), including bytes not yet parsed.
   * This is what maxStanzaBytes / maxHeaderBytes limit.
   */
  get bytesBuffered(): number {
    return this.failed || this.engine.ended ? 0 : this.engine.bytesBuffered;
  }

  write(chunk: Buffer | Uint8Array): void {
    if (this.failed || this.engine.ended) return;
    if (this.writing) {
      // A handler wrote synchronously: saxes is not re-entrant, so queue (copied: caller may reuse it).
      this.queue.push(Uint8Array.prototype.slice.call(chunk));
      return;
    }
    this.writing = true;
    try {
      this.engine.feed(chunk);
      while (this.queue.length > 0 && !this.failed && !this.engine.ended) {
        this.engine.feed(this.queue.shift() as Uint8Array);
      }
    } catch (err) {
      this.fail(toStreamError(err));
    } finally {
      this.writing = false;
    }
  }

  /**
   * Start a new stream (after STARTTLS or SASL success). Safe to call from inside the stanza
   * handler: the rest of the chunk being parsed, and anything queued, is discarded. A parser that
   * has reported an error stays dead.
   */
  reset(): void {
    if (this.failed) return;
    this.queue = [];
    this.engine.fresh();
  }

  private fail(err: StreamError): void {
    if (this.failed) return;
    this.failed = true;
    this.queue = [];
    try {
      this.handlers.onStreamError(err);
    } catch {
      // write() must never throw, whatever the handler does.
    }
  }
}

/**
 * Standalone mode for transports that carry one element per message (WebSocket RFC 7395, BOSH
 * bodies): parse one complete document with the same restrictions and limits (the root element is
 * depth 1). Returns the root element or throws StreamError.
 */
export function parseElement(xml: string | Buffer, limits?: Partial<StreamParserLimits>): Element {
  const lim = resolveLimits(limits);
  // Size first: oversized input never reaches the decoder or saxes.
  const size = typeof xml === 'string' ? Buffer.byteLength(xml, 'utf8') : xml.length;
  if (size > lim.maxStanzaBytes) {
    throw new StreamError('policy-violation', `element larger than ${lim.maxStanzaBytes} bytes`);
  }
  let text: string;
  if (typeof xml === 'string') {
    // A JS string can hold lone surrogates, which saxes does not always catch.
    // (String.prototype.isWellFormed is in Node 20 but not in this project's ES2022 lib typings.)
    if (!(xml as unknown as { isWellFormed(): boolean }).isWellFormed()) {
      throw new StreamError('not-well-formed', 'invalid UTF-16 (lone surrogate)');
    }
    text = xml;
  } else {
    try {
      text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(xml);
    } catch {
      throw new StreamError('not-well-formed', 'invalid UTF-8');
    }
  }
  let root: Element | undefined;
  const engine = new Engine('document', lim, {
    element: (el) => {
      root = el;
    },
  });
  try {
    engine.parseDocument(text);
  } catch (err) {
    throw toStreamError(err);
  }
  if (!root) throw new StreamError('not-well-formed', 'no root element');
  return root;
}
