// Unit tests for the hardened XML stream parser (src/xmpp/parser.ts; RFC 6120 §4/§11, HARDENING.md
// "XML and streams"). Positive cases are fed in many chunkings (whole, byte by byte, fixed sizes,
// seeded random splits) and must produce identical events.
import type { Element } from 'ltx';
import { SaxesParser } from 'saxes';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { StreamError } from '../../src/xmpp/errors.js';
import { NS } from '../../src/xmpp/ns.js';
import { StreamParser, parseElement } from '../../src/xmpp/parser.js';
import type { StreamParserLimits } from '../../src/xmpp/parser.js';

// ---- helpers -------------------------------------------------------------------------------------

const HEADER =
  "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' xml:lang='en'>";
const S2S_HEADER =
  "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' to='b.example' from='a.example' version='1.0'>";

type Ev =
  | { t: 'start'; attrs: Record<string, string>; info: { name: string; ns: string; defaultNs: string } }
  | { t: 'stanza'; xml: string }
  | { t: 'end' }
  | { t: 'error'; condition: string };

interface Run {
  events: Ev[];
  stanzas: Element[];
  parser: StreamParser;
  errors: StreamError[];
}

function newRun(limits?: Partial<StreamParserLimits>, onStanza?: (el: Element, parser: StreamParser) => void): Run {
  const events: Ev[] = [];
  const stanzas: Element[] = [];
  const errors: StreamError[] = [];
  const run = { events, stanzas, errors } as Run;
  run.parser = new StreamParser(
    {
      onStreamStart: (attrs, info) => events.push({ t: 'start', attrs: { ...attrs }, info }),
      onStanza: (el) => {
        stanzas.push(el);
        events.push({ t: 'stanza', xml: el.toString() });
        onStanza?.(el, run.parser);
      },
      onStreamEnd: () => events.push({ t: 'end' }),
      onStreamError: (err) => {
        errors.push(err);
        events.push({ t: 'error', condition: err.condition });
      },
    },
    limits,
  );
  return run;
}

/** Deterministic PRNG (mulberry32) so random chunkings are reproducible. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Chunker = { name: string; split: (b: Buffer) => Buffer[] };

function fixed(n: number): Chunker {
  return {
    name: `${n}-byte chunks`,
    split: (b) => {
      const out: Buffer[] = [];
      for (let i = 0; i < b.length; i += n) out.push(b.subarray(i, i + n));
      return out;
    },
  };
}

function random(seed: number): Chunker {
  return {
    name: `random splits #${seed}`,
    split: (b) => {
      const rnd = prng(seed);
      const out: Buffer[] = [];
      let i = 0;
      while (i < b.length) {
        const n = 1 + Math.floor(rnd() * 17);
        out.push(b.subarray(i, i + n));
        i += n;
      }
      return out;
    },
  };
}

const CHUNKERS: Chunker[] = [
  { name: 'whole', split: (b) => [b] },
  fixed(1),
  fixed(2),
  fixed(3),
  fixed(7),
  fixed(64),
  random(1),
  random(2),
  random(3),
  random(42),
];

const bytes = (s: string | Buffer): Buffer => (typeof s === 'string' ? Buffer.from(s, 'utf8') : s);

function feed(input: string | Buffer, chunker: Chunker = CHUNKERS[0] as Chunker, limits?: Partial<StreamParserLimits>): Run {
  const run = newRun(limits);
  for (const c of chunker.split(bytes(input))) run.parser.write(c);
  return run;
}

/** Parse in every chunking; all must agree. Returns the events of the whole-buffer run. */
function feedAll(input: string | Buffer, limits?: Partial<StreamParserLimits>): Ev[] {
  const reference = feed(input, CHUNKERS[0], limits).events;
  for (const ch of CHUNKERS.slice(1)) {
    expect(feed(input, ch, limits).events, ch.name).toEqual(reference);
  }
  return reference;
}

/** Every chunking must end in exactly one error with this condition, and nothing after it. */
function expectError(input: string | Buffer, condition: string, limits?: Partial<StreamParserLimits>): Ev[] {
  const reference = feed(input, CHUNKERS[0], limits).events;
  for (const ch of CHUNKERS) {
    const ev = feed(input, ch, limits).events;
    const errs = ev.filter((e) => e.t === 'error');
    expect(errs, ch.name).toEqual([{ t: 'error', condition }]);
    expect(ev[ev.length - 1], ch.name).toEqual({ t: 'error', condition });
  }
  return reference;
}

const stanzaXml = (ev: Ev[]): string[] => ev.flatMap((e) => (e.t === 'stanza' ? [e.xml] : []));
const conditionOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(StreamError);
    return (err as StreamError).condition;
  }
  throw new Error('expected a StreamError');
};

afterEach(() => {
  vi.restoreAllMocks();
});

// ---- 1. UTF-8 --------------------------------------------------------------------------------------

describe('UTF-8 decoding', () => {
  it('decodes multi-byte characters split across any chunk boundary', () => {
    const text = 'héllo €uro 😀 漢字 \u{10FFFF}\uFFFD\uE000';
    const ev = feedAll(`${HEADER}<message to='ü@例え.jp'><body>${text}</body></message>`);
    expect(ev[0]).toMatchObject({ t: 'start' });
    const run = feed(`${HEADER}<message to='ü@例え.jp'><body>${text}</body></message>`, fixed(1));
    expect(run.stanzas[0]?.getChildText('body')).toBe(text);
    expect(run.stanzas[0]?.attrs.to).toBe('ü@例え.jp');
  });

  it('accepts a BOM at the very start, also when split', () => {
    const ev = feedAll(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), bytes(`${HEADER}<presence/>`)]));
    expect(stanzaXml(ev)).toEqual(['<presence/>']);
  });

  it('rejects a BOM (U+FEFF) in the middle of the stream as top-level text', () => {
    expectError(Buffer.concat([bytes(HEADER), Buffer.from([0xef, 0xbb, 0xbf]), bytes('<presence/>')]), 'not-well-formed');
  });

  const invalid: [string, number[]][] = [
    ['lone lead byte', [0xc3, 0x41]],
    ['lone continuation byte', [0x80]],
    ['truncated 3-byte sequence', [0xe2, 0x82, 0x3c]],
    ['overlong 2-byte', [0xc0, 0xaf]],
    ['overlong 3-byte', [0xe0, 0x80, 0xaf]],
    ['overlong 4-byte', [0xf0, 0x80, 0x80, 0xaf]],
    ['encoded surrogate', [0xed, 0xa0, 0x80]],
    ['encoded low surrogate', [0xed, 0xbf, 0xbf]],
    ['above U+10FFFF', [0xf4, 0x90, 0x80, 0x80]],
    ['0xFF', [0xff]],
    ['0xFE', [0xfe]],
  ];
  for (const [name, seq] of invalid) {
    it(`rejects invalid UTF-8: ${name}`, () => {
      const input = Buffer.concat([bytes(`${HEADER}<message><body>a`), Buffer.from(seq), bytes('b</body></message>')]);
      const ev = expectError(input, 'not-well-formed');
      expect(stanzaXml(ev)).toEqual([]);
    });
  }

  it('rejects invalid UTF-8 inside the stream header and in attribute values', () => {
    expectError(Buffer.concat([bytes("<stream:stream to='"), Buffer.from([0xc0, 0x80]), bytes("'>")]), 'not-well-formed');
    expectError(Buffer.concat([bytes(`${HEADER}<message to='`), Buffer.from([0xff]), bytes("'/>")]), 'not-well-formed');
  });
});

// ---- 2. Characters ------------------------------------------------------------------------------

describe('XML 1.0 characters', () => {
  it('accepts tab, CR, LF and their character references, and the edges of the Char production', () => {
    const run = feed(`${HEADER}<message><body>a\tb\r\nc&#9;&#10;&#13;&#xD7FF;&#xE000;&#xFFFD;&#x10FFFF;</body></message>`, fixed(1));
    // CRLF is normalized to LF (XML 1.0 §2.11); the &#13; reference survives as CR.
    expect(run.stanzas[0]?.getChildText('body')).toBe('a\tb\nc\t\n\r\uD7FF\uE000\uFFFD\u{10FFFF}');
    expect(run.errors).toEqual([]);
  });

  for (const code of [0x00, 0x01, 0x08, 0x0b, 0x0c, 0x1b, 0x1f]) {
    const hex = code.toString(16);
    it(`rejects raw control character U+${hex.padStart(4, '0')} in text and attributes`, () => {
      const c = String.fromCharCode(code);
      expectError(`${HEADER}<message><body>x${c}y</body></message>`, 'not-well-formed');
      expectError(`${HEADER}<message id='x${c}'/>`, 'not-well-formed');
    });
    it(`rejects control character reference &#${code}; / &#x${hex};`, () => {
      expectError(`${HEADER}<message><body>&#${code};</body></message>`, 'not-well-formed');
      expectError(`${HEADER}<message id='&#x${hex};'/>`, 'not-well-formed');
    });
  }

  it('rejects U+FFFE and U+FFFF, raw and as references', () => {
    for (const ch of ['\uFFFE', '\uFFFF', '&#xFFFE;', '&#65535;', '&#xD800;', '&#x110000;']) {
      expectError(`${HEADER}<message><body>${ch}</body></message>`, 'not-well-formed');
    }
  });

  it('rejects control characters before the stream header', () => {
    expectError(`\x01${HEADER}`, 'not-well-formed');
  });
});

// ---- 3. Restricted XML ----------------------------------------------------------------------------

describe('restricted XML (RFC 6120 §11.1)', () => {
  const laughs =
    "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;&lol;'>]>" +
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><message><body>&lol2;</body></message>";

  it('rejects a DOCTYPE with entity declarations in the prolog without expanding anything', () => {
    const ev = expectError(laughs, 'restricted-xml');
    expect(ev).toEqual([{ t: 'error', condition: 'restricted-xml' }]);
  });

  it('rejects DOCTYPE between stanzas and inside a stanza', () => {
    const ev = expectError(`${HEADER}<presence/><!DOCTYPE x><message/>`, 'restricted-xml');
    expect(stanzaXml(ev)).toEqual(['<presence/>']);
    expectError(`${HEADER}<message><!DOCTYPE x></message>`, 'restricted-xml');
  });

  it('rejects entity and other markup declarations outside a DOCTYPE', () => {
    expectError(`${HEADER}<!ENTITY x 'y'>`, 'restricted-xml');
    expectError(`${HEADER}<message><!ENTITY x 'y'></message>`, 'restricted-xml');
    expectError(`${HEADER}<!ELEMENT x ANY>`, 'restricted-xml');
  });

  it('rejects processing instructions in the prolog, between stanzas and inside stanzas', () => {
    expectError(`<?xml version='1.0'?><?xml-stylesheet href='x'?><stream:stream xmlns:stream='${NS.STREAM}'>`, 'restricted-xml');
    expectError(`${HEADER}<?foo bar?>`, 'restricted-xml');
    expectError(`${HEADER}<message><?foo?></message>`, 'restricted-xml');
  });

  it('rejects comments in the prolog, between stanzas and inside stanzas', () => {
    expectError(`<!-- hi --><stream:stream xmlns:stream='${NS.STREAM}'>`, 'restricted-xml');
    expectError(`${HEADER}<!-- keepalive -->`, 'restricted-xml');
    expectError(`${HEADER}<message><body>a<!--x-->b</body></message>`, 'restricted-xml');
  });

  it('rejects undefined entity references (never expanded)', () => {
    const ev = expectError(`${HEADER}<message><body>&lol;</body></message>`, 'not-well-formed');
    expect(stanzaXml(ev)).toEqual([]);
    expectError(`${HEADER}<message to='&nbsp;'/>`, 'not-well-formed');
    expectError(`${HEADER}<message><body>&;</body></message>`, 'not-well-formed');
    expectError(`${HEADER}<message><body>& x;</body></message>`, 'not-well-formed');
  });

  it('accepts the five predefined entities and character references', () => {
    const run = feed(`${HEADER}<message id='&lt;&gt;&amp;&quot;&apos;&#65;&#x42;'><body>&lt;&gt;&amp;&quot;&apos;&#67;&#x44;</body></message>`);
    expect(run.stanzas[0]?.attrs.id).toBe(`<>&"'AB`);
    expect(run.stanzas[0]?.getChildText('body')).toBe(`<>&"'CD`);
    feedAll(`${HEADER}<message id='&lt;&gt;&amp;&quot;&apos;&#65;&#x42;'><body>&lt;&#x1F600;&amp;</body></message>`);
  });

  it('accepts CDATA sections as text, merged with the surrounding text', () => {
    const ev = feedAll(`${HEADER}<message><body>a<![CDATA[<b>&amp;]]]]>c</body></message>`);
    expect(stanzaXml(ev)).toEqual(['<message><body>a&lt;b&gt;&amp;amp;]]c</body></message>']);
    const run = feed(`${HEADER}<message><body>a<![CDATA[<b>&amp;]]]]>c</body></message>`, fixed(1));
    expect(run.stanzas[0]?.getChild('body')?.children).toEqual(['a<b>&amp;]]c']);
  });

  it('rejects a bare ]]> in text', () => {
    expectError(`${HEADER}<message><body>a]]>b</body></message>`, 'not-well-formed');
  });
});

// ---- 4. XML declaration ---------------------------------------------------------------------------

describe('XML declaration', () => {
  it('accepts a UTF-8 declaration in any case, or none at all', () => {
    for (const decl of [
      '',
      "<?xml version='1.0'?>",
      '<?xml version="1.0" encoding="UTF-8"?>',
      "<?xml version='1.0' encoding='utf-8' standalone='yes'?>",
    ]) {
      const ev = feedAll(`${decl}<stream:stream xmlns:stream='${NS.STREAM}' xmlns='jabber:client'><iq type='get' id='1'/>`);
      expect(ev.map((e) => e.t)).toEqual(['start', 'stanza']);
    }
  });

  it('rejects versions other than 1.0', () => {
    expectError(`<?xml version='1.1'?><stream:stream xmlns:stream='${NS.STREAM}'>`, 'unsupported-version');
    expectError(`<?xml version='2.0'?><stream:stream xmlns:stream='${NS.STREAM}'>`, 'unsupported-version');
  });

  it('rejects encodings other than UTF-8', () => {
    for (const enc of ['ISO-8859-1', 'UTF-16', 'utf8', 'US-ASCII']) {
      expectError(`<?xml version='1.0' encoding='${enc}'?><stream:stream xmlns:stream='${NS.STREAM}'>`, 'unsupported-encoding');
    }
  });

  it('rejects a second XML declaration mid-stream instead of resetting', () => {
    const ev = expectError(`${HEADER}<presence/><?xml version='1.0'?><message/>`, 'restricted-xml');
    expect(ev.map((e) => e.t)).toEqual(['start', 'stanza', 'error']);
  });

  it('rejects an XML declaration that is not at the very start', () => {
    expectError(` ${HEADER}`, 'restricted-xml');
  });

  it('rejects a second stream header mid-stream instead of resetting', () => {
    const ev = expectError(`${HEADER}<presence/>${HEADER.replace("<?xml version='1.0'?>", '')}<message/>`, 'not-well-formed');
    expect(ev.filter((e) => e.t === 'start')).toHaveLength(1);
    expectError(`${HEADER}<message><stream:stream xmlns:stream='${NS.STREAM}'/></message>`, 'not-well-formed');
  });
});

// ---- 5. Stream header -----------------------------------------------------------------------------

describe('stream header', () => {
  it('reports attributes as written and the namespaces', () => {
    const ev = feedAll(HEADER);
    expect(ev).toEqual([
      {
        t: 'start',
        attrs: {
          xmlns: 'jabber:client',
          'xmlns:stream': NS.STREAM,
          to: 'example.com',
          version: '1.0',
          'xml:lang': 'en',
        },
        info: { name: 'stream:stream', ns: NS.STREAM, defaultNs: 'jabber:client' },
      },
    ]);
  });

  it('reports but does not judge the default namespace', () => {
    for (const ns of ['jabber:client', 'jabber:server', 'jabber:component:accept', 'urn:bogus']) {
      const ev = feedAll(`<stream:stream xmlns:stream='${NS.STREAM}' xmlns='${ns}'>`);
      expect(ev).toMatchObject([{ t: 'start', info: { defaultNs: ns } }]);
    }
    expect(feedAll(`<stream:stream xmlns:stream='${NS.STREAM}'>`)).toMatchObject([{ t: 'start', info: { defaultNs: '' } }]);
  });

  it('accepts another prefix or no prefix for the streams namespace', () => {
    expect(feedAll(`<s:stream xmlns:s='${NS.STREAM}' xmlns='jabber:client'><s:features/>`)).toMatchObject([
      { t: 'start', info: { name: 's:stream', ns: NS.STREAM } },
      // 's' is not the conventional 'stream' prefix, so its declaration is copied like any other.
      { t: 'stanza', xml: `<s:features xmlns:s="${NS.STREAM}"/>` },
    ]);
    expect(feedAll(`<stream xmlns='${NS.STREAM}'>`)).toMatchObject([{ t: 'start', info: { name: 'stream', ns: NS.STREAM } }]);
  });

  it('rejects a wrong namespace or root element with invalid-namespace', () => {
    expectError("<stream:stream xmlns:stream='jabber:client' xmlns='jabber:client'>", 'invalid-namespace');
    expectError("<stream xmlns='jabber:client'>", 'invalid-namespace');
    expectError(`<stream:foo xmlns:stream='${NS.STREAM}'>`, 'invalid-namespace');
    expectError('<html><body>hi</body></html>', 'invalid-namespace');
  });

  it('rejects an unbound stream prefix as not-well-formed', () => {
    expectError("<stream:stream xmlns='jabber:client' to='example.com'>", 'not-well-formed');
  });
});

// ---- 6. Stanzas -------------------------------------------------------------------------------------

describe('stanzas', () => {
  it('emits each top-level child as a detached ltx tree', () => {
    const ev = feedAll(
      `${HEADER}<message to='a@b' type='chat'><body>hi</body><x xmlns='jabber:x:data'><field var='f'/></x></message><presence/><iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>`,
    );
    expect(stanzaXml(ev)).toEqual([
      '<message to="a@b" type="chat"><body>hi</body><x xmlns="jabber:x:data"><field var="f"/></x></message>',
      '<presence/>',
      '<iq type="get" id="1"><query xmlns="jabber:iq:roster"/></iq>',
    ]);
    const run = feed(`${HEADER}<message><body>hi</body></message>`);
    const msg = run.stanzas[0] as Element;
    expect(msg.parent).toBeNull();
    expect(msg.getChild('body')?.parent).toBe(msg);
  });

  it("drops a top-level xmlns equal to the stream's default namespace, keeps any other", () => {
    const ev = feedAll(
      `${HEADER}<message xmlns='jabber:client'><body xmlns='jabber:client'>x</body></message><auth xmlns='${NS.SASL}' mechanism='PLAIN'>AA==</auth>`,
    );
    expect(stanzaXml(ev)).toEqual([
      '<message><body xmlns="jabber:client">x</body></message>',
      `<auth xmlns="${NS.SASL}" mechanism="PLAIN">AA==</auth>`,
    ]);
    // On a jabber:server stream a jabber:client stanza keeps its declaration (the session judges).
    expect(stanzaXml(feedAll(`${S2S_HEADER}<message xmlns='jabber:client'/><message xmlns='jabber:server'/>`))).toEqual([
      '<message xmlns="jabber:client"/>',
      '<message/>',
    ]);
  });

  it('copies prefix declarations made only on the stream header onto the stanza', () => {
    const ev = feedAll(
      `${S2S_HEADER}<db:result from='a.example' to='b.example'>key</db:result><iq><x><db:verify id='1'/></x></iq><message db:attr='1'/>`,
    );
    const xml = stanzaXml(ev);
    expect(xml).toEqual([
      '<db:result from="a.example" to="b.example" xmlns:db="jabber:server:dialback">key</db:result>',
      '<iq xmlns:db="jabber:server:dialback"><x><db:verify id="1"/></x></iq>',
      '<message db:attr="1" xmlns:db="jabber:server:dialback"/>',
    ]);
    // Self-contained: each re-parses on its own with the same namespaces.
    for (const s of xml) {
      const el = parseElement(s);
      expect(el.toString()).toBe(s);
    }
    expect(parseElement(xml[0] as string).getNS()).toBe('jabber:server:dialback');
  });

  it('does not copy a header prefix the stanza redeclares, nor stream/xml', () => {
    const ev = feedAll(
      `${S2S_HEADER}<db:result xmlns:db='urn:other'/><x><y xmlns:db='urn:inner'><db:z/></y></x><stream:error><host-unknown xmlns='${NS.STREAMS}'/></stream:error><m xml:lang='de'/>`,
    );
    expect(stanzaXml(ev)).toEqual([
      '<db:result xmlns:db="urn:other"/>',
      '<x><y xmlns:db="urn:inner"><db:z/></y></x>',
      `<stream:error><host-unknown xmlns="${NS.STREAMS}"/></stream:error>`,
      '<m xml:lang="de"/>',
    ]);
  });

  it('keeps stream-prefixed top-level elements named as written', () => {
    const run = feed(`${HEADER}<stream:features><starttls xmlns='${NS.TLS}'/></stream:features>`);
    expect(run.stanzas[0]?.name).toBe('stream:features');
  });

  it('rejects unbound prefixes on elements and attributes', () => {
    expectError(`${HEADER}<foo:message/>`, 'not-well-formed');
    expectError(`${HEADER}<message><foo:x/></message>`, 'not-well-formed');
    expectError(`${HEADER}<message foo:bar='1'/>`, 'not-well-formed');
  });

  it('rejects duplicate attributes and mismatched end tags, emitting nothing partial', () => {
    expectError(`${HEADER}<message id='1' id='2'/>`, 'not-well-formed');
    let ev = expectError(`${HEADER}<presence/><message><body>x</body></foo>`, 'not-well-formed');
    expect(stanzaXml(ev)).toEqual(['<presence/>']);
    ev = expectError(`${HEADER}<iq type='set'><query xmlns='jabber:iq:roster'/></stream:stream>`, 'not-well-formed');
    expect(stanzaXml(ev)).toEqual([]);
  });

  it('keeps an attribute named __proto__ as a plain attribute', () => {
    const run = feed(`${HEADER}<message __proto__='x' id='1'/>`);
    const el = run.stanzas[0] as Element;
    expect(Object.getPrototypeOf(el.attrs)).toBe(Object.prototype);
    expect(Object.keys(el.attrs)).toEqual(['__proto__', 'id']);
    expect(el.toString()).toBe('<message __proto__="x" id="1"/>');
  });
});

// ---- 7. Text ----------------------------------------------------------------------------------------

describe('text', () => {
  it('ignores whitespace keepalives before, between and after stanzas', () => {
    const ev = feedAll(`${HEADER} \n\t\r\n<presence/>  \n  <message/>\n \n`);
    expect(ev.map((e) => e.t)).toEqual(['start', 'stanza', 'stanza']);
    const run = newRun();
    run.parser.write(bytes(HEADER));
    for (let i = 0; i < 1000; i++) run.parser.write(Buffer.from(' '));
    run.parser.write(bytes('<presence/>'));
    expect(run.events.map((e) => e.t)).toEqual(['start', 'stanza']);
  });

  it('rejects non-whitespace text at the top level', () => {
    expectError(`${HEADER}hello<presence/>`, 'not-well-formed');
    expectError(`${HEADER}<presence/>x<presence/>`, 'not-well-formed');
    expectError(`${HEADER}&amp;<presence/>`, 'not-well-formed');
    expectError(`${HEADER}<![CDATA[x]]><presence/>`, 'not-well-formed');
    expectError(`${HEADER}\u00a0<presence/>`, 'not-well-formed'); // NBSP is not XML whitespace
  });

  it('keeps text inside stanzas, merging adjacent pieces into one string child', () => {
    for (const ch of CHUNKERS) {
      const run = feed(`${HEADER}<message><body>  a &amp; b\n<![CDATA[c]]>&#100;</body><x>1<y/>2</x></message>`, ch);
      const msg = run.stanzas[0] as Element;
      expect(msg.getChild('body')?.children, ch.name).toEqual(['  a & b\ncd']);
      expect(msg.getChild('x')?.children.map((c) => (typeof c === 'string' ? c : c.name))).toEqual(['1', 'y', '2']);
    }
  });
});

// ---- 8. Size ----------------------------------------------------------------------------------------

describe('size limit', () => {
  const LIMIT = 1000;
  /** A message whose serialized size (as sent) is exactly n bytes. */
  const messageOfSize = (n: number, ch = 'a'): string => {
    const shell = '<message><body></body></message>';
    const per = Buffer.byteLength(ch);
    const count = (n - shell.length) / per;
    expect(Number.isInteger(count)).toBe(true);
    return `<message><body>${ch.repeat(count)}</body></message>`;
  };

  it('accepts a stanza of exactly the limit, and many stanzas totalling far more', () => {
    const ev = feedAll(`${HEADER}${messageOfSize(LIMIT)}${messageOfSize(LIMIT)}${'<presence/>'.repeat(500)}`, {
      maxStanzaBytes: LIMIT,
    });
    expect(stanzaXml(ev)).toHaveLength(502);
  });

  it('rejects a stanza one byte over the limit', () => {
    const ev = expectError(`${HEADER}<presence/>${messageOfSize(LIMIT + 1)}`, 'policy-violation', { maxStanzaBytes: LIMIT });
    expect(stanzaXml(ev)).toEqual(['<presence/>']);
  });

  it('does not count keepalive whitespace between stanzas, however long', () => {
    const ev = feedAll(`${HEADER}<presence/> \n\t ${messageOfSize(LIMIT)}\n${' '.repeat(5000)}\n${messageOfSize(LIMIT)}`, {
      maxStanzaBytes: LIMIT,
    });
    expect(stanzaXml(ev)).toHaveLength(3);
    expectError(`${HEADER}<presence/> \n ${messageOfSize(LIMIT + 1)}`, 'policy-violation', { maxStanzaBytes: LIMIT });
    // Months of one-byte whitespace pings: never a policy-violation, nothing accumulates.
    const run = newRun({ maxStanzaBytes: LIMIT });
    run.parser.write(bytes(`${HEADER}<presence/> `));
    for (let i = 0; i < 20_000; i++) run.parser.write(i % 2 ? Buffer.from(' ') : Buffer.from('\r\n'));
    expect(run.parser.bytesBuffered).toBe(0);
    run.parser.write(bytes(messageOfSize(LIMIT)));
    expect(run.errors).toEqual([]);
    expect(run.stanzas).toHaveLength(2);
  });

  it('counts raw UTF-8 bytes, not characters', () => {
    // '€' is 3 bytes: 322 of them make a 998-byte stanza, 323 a 1001-byte one (355 characters).
    const fits = `<message><body>${'€'.repeat(322)}</body></message>`;
    expect(stanzaXml(feedAll(`${HEADER}${fits}`, { maxStanzaBytes: LIMIT }))).toHaveLength(1);
    expectError(`${HEADER}<message><body>${'€'.repeat(323)}</body></message>`, 'policy-violation', { maxStanzaBytes: LIMIT });
    expectError(`${HEADER}<message><body>${'😀'.repeat(250)}</body></message>`, 'policy-violation', { maxStanzaBytes: LIMIT });
  });

  it('measures each stanza exactly, in bytes, whatever the chunking (seeded fuzz)', () => {
    const pieces = ['a', 'é', '€', '😀', '漢', '&amp;', '&#x1F600;', '<![CDATA[x<€]]>', ' ', '\r\n', '<b/>', "<c k='v€&lt;'>t</c>"];
    const gaps = ['', ' ', '\n', '\r\n  ', '\t'];
    for (let seed = 1; seed <= 12; seed++) {
      const rnd = prng(seed * 7919);
      const stanzas: string[] = [];
      let input = HEADER;
      for (let i = 0; i < 25; i++) {
        let body = '';
        for (let n = Math.floor(rnd() * 60); n > 0; n--) body += pieces[Math.floor(rnd() * pieces.length)];
        const st = `<message id='${i}' to='ü@例.jp'><body>${body}</body></message>`;
        stanzas.push(st);
        input += gaps[Math.floor(rnd() * gaps.length)] + st;
      }
      const sizes = stanzas.map((st) => Buffer.byteLength(st));
      const max = Math.max(...sizes);
      const ok = feedAll(input, { maxStanzaBytes: max });
      expect(stanzaXml(ok), `seed ${seed}`).toHaveLength(25);
      for (const ch of CHUNKERS) expect(feed(input, ch, { maxStanzaBytes: max }).parser.bytesBuffered).toBe(0);
      const ev = expectError(input, 'policy-violation', { maxStanzaBytes: max - 1 });
      expect(stanzaXml(ev), `seed ${seed}`).toHaveLength(sizes.indexOf(max));
    }
  });

  it('stops an endless attribute value fed in 4 KiB chunks right after the default 256 KiB', () => {
    const run = newRun();
    run.parser.write(bytes(`${HEADER}<message to='`));
    const chunk = Buffer.alloc(4096, 'a');
    let sent = 0;
    while (run.errors.length === 0 && sent < 4 * 1024 * 1024) {
      run.parser.write(chunk);
      sent += chunk.length;
    }
    expect(run.events.map((e) => e.t)).toEqual(['start', 'error']);
    expect(run.errors[0]?.condition).toBe('policy-violation');
    expect(sent).toBeGreaterThan(262144 - 4096 - 20);
    expect(sent).toBeLessThanOrEqual(262144 + 4096);
  });

  it('stops a 1 MiB text node fed in 4 KiB chunks', () => {
    const run = newRun();
    run.parser.write(bytes(`${HEADER}<message><body>`));
    const chunk = Buffer.alloc(4096, 'x');
    for (let i = 0; i < 256; i++) run.parser.write(chunk);
    run.parser.write(bytes('</body></message>'));
    expect(run.events.map((e) => e.t)).toEqual(['start', 'error']);
    expect(run.errors[0]?.condition).toBe('policy-violation');
  });

  it('never hands saxes much more than the limit, even from one huge write', () => {
    const spy = vi.spyOn(SaxesParser.prototype, 'write');
    const run = newRun({ maxStanzaBytes: 64 * 1024 });
    run.parser.write(bytes(`${HEADER}<message><body>${'y'.repeat(8 * 1024 * 1024)}</body></message><presence/>`));
    expect(run.events.map((e) => e.t)).toEqual(['start', 'error']);
    expect(run.errors[0]?.condition).toBe('policy-violation');
    const handed = spy.mock.calls.reduce((n, [s]) => n + (typeof s === 'string' ? s.length : 0), 0);
    expect(handed).toBeGreaterThan(64 * 1024); // the spy saw the traffic
    expect(handed).toBeLessThanOrEqual(HEADER.length + 64 * 1024 + 1);
  });

  it('limits the stream header separately', () => {
    const big = `<stream:stream xmlns:stream='${NS.STREAM}' to='${'h'.repeat(9000)}'>`;
    expectError(big, 'policy-violation');
    expect(feedAll(big, { maxHeaderBytes: 10000 })).toMatchObject([{ t: 'start' }]);
  });

  it('reports bytesBuffered as raw bytes pending since the last stanza, including undecoded bytes', () => {
    const run = newRun();
    run.parser.write(bytes(HEADER));
    expect(run.parser.bytesBuffered).toBe(0);
    run.parser.write(bytes('<message><body>é'));
    expect(run.parser.bytesBuffered).toBe(Buffer.byteLength('<message><body>é'));
    run.parser.write(Buffer.from([0xe2, 0x82])); // first two bytes of '€', held by the decoder
    expect(run.parser.bytesBuffered).toBe(Buffer.byteLength('<message><body>é') + 2);
    run.parser.write(Buffer.concat([Buffer.from([0xac]), bytes('</body></message> <iq><b>€')]));
    expect(run.stanzas).toHaveLength(1);
    expect(run.stanzas[0]?.getChildText('body')).toBe('é€');
    // Counted from the next stanza's '<' (the keepalive space before it is not part of it).
    expect(run.parser.bytesBuffered).toBe(Buffer.byteLength('<iq><b>€'));
    run.parser.write(Buffer.concat([bytes('</b></iq>\n '), Buffer.from([0xf0, 0x9f])]));
    // The second stanza ended mid-chunk: two bytes of whitespace plus two held by the decoder remain.
    expect(run.stanzas).toHaveLength(2);
    expect(run.parser.bytesBuffered).toBe(4);
  });

  it('reports bytesBuffered precisely after a stanza that ends mid-chunk with multi-byte text', () => {
    const run = newRun();
    run.parser.write(bytes(HEADER));
    run.parser.write(Buffer.concat([bytes('<message><body>日本</body></message>\n<presence><status>ü'), Buffer.from([0xc3])]));
    expect(run.stanzas).toHaveLength(1);
    expect(run.parser.bytesBuffered).toBe(Buffer.byteLength('<presence><status>ü') + 1);
    run.parser.write(Buffer.from([0xbc]));
    run.parser.write(bytes('</status></presence>'));
    expect(run.parser.bytesBuffered).toBe(0);
    expect(run.stanzas[1]?.getChildText('status')).toBe('üü');
  });
});

// ---- 9. Depth and attributes ------------------------------------------------------------------------

describe('depth and attribute limits', () => {
  const nested = (n: number): string => `${'<a>'.repeat(n)}${'</a>'.repeat(n)}`;

  it('accepts nesting up to maxDepth levels inside a stanza', () => {
    expect(stanzaXml(feedAll(`${HEADER}${nested(32)}`))).toHaveLength(1);
    expect(stanzaXml(feedAll(`${HEADER}${nested(5)}`, { maxDepth: 5 }))).toHaveLength(1);
  });

  it('rejects maxDepth + 1 levels', () => {
    expectError(`${HEADER}${nested(33)}`, 'policy-violation');
    expectError(`${HEADER}${nested(6)}`, 'policy-violation', { maxDepth: 5 });
  });

  it('rejects 100k-deep nesting without recursion or stack overflow', () => {
    const run = feed(`${HEADER}${'<a>'.repeat(100_000)}`, CHUNKERS[0], { maxStanzaBytes: 1 << 20 });
    expect(run.errors.map((e) => e.condition)).toEqual(['policy-violation']);
  });

  const withAttrs = (n: number, make: (i: number) => string): string =>
    `<message ${Array.from({ length: n }, (_, i) => make(i)).join(' ')}/>`;

  it('accepts exactly maxAttributes attributes, counting namespace declarations', () => {
    const half = (i: number): string => (i % 2 ? `a${i}='v'` : `xmlns:p${i}='urn:p${i}'`);
    const ev = feedAll(`${HEADER}${withAttrs(64, half)}`);
    expect(stanzaXml(ev)).toHaveLength(1);
  });

  it('rejects maxAttributes + 1 attributes, thousands of attributes and of xmlns declarations', () => {
    expectError(`${HEADER}${withAttrs(65, (i) => `a${i}='v'`)}`, 'policy-violation');
    expectError(`${HEADER}${withAttrs(5000, (i) => `a${i}='v'`)}`, 'policy-violation');
    expectError(`${HEADER}${withAttrs(5000, (i) => `xmlns:p${i}='urn:x'`)}`, 'policy-violation');
    expectError(`${HEADER}<message><x ${Array.from({ length: 11 }, (_, i) => `a${i}='v'`).join(' ')}/></message>`, 'policy-violation', {
      maxAttributes: 10,
    });
  });

  it('applies the attribute limit to the stream header too', () => {
    const attrs = Array.from({ length: 100 }, (_, i) => `a${i}='v'`).join(' ');
    expectError(`<stream:stream xmlns:stream='${NS.STREAM}' ${attrs}>`, 'policy-violation');
  });
});

// ---- 10. Stream end, junk, error discipline ---------------------------------------------------------

describe('stream end and errors', () => {
  it('reports </stream:stream> after the last stanza and ignores anything after it', () => {
    const ev = feedAll(`${HEADER}<presence/></stream:stream><junk>&bogus;`);
    expect(ev.map((e) => e.t)).toEqual(['start', 'stanza', 'end']);
    const run = feed(`${HEADER}</stream:stream>`);
    run.parser.write(bytes('garbage'));
    expect(run.events.map((e) => e.t)).toEqual(['start', 'end']);
  });

  it('rejects junk bytes instead of a stream', () => {
    expectError('GET / HTTP/1.1\r\nHost: example.com\r\n\r\n', 'not-well-formed');
    expectError(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]), 'not-well-formed'); // TLS ClientHello
    expectError('<<<', 'not-well-formed');
  });

  it('reports exactly one error and ignores everything after it', () => {
    const run = newRun();
    run.parser.write(bytes(`${HEADER}<message>&bad;</message>`));
    run.parser.write(bytes('<!-- more --><?pi?>\x01'));
    run.parser.write(Buffer.from([0xff, 0xfe]));
    run.parser.write(bytes('<presence/>'));
    expect(run.errors.map((e) => e.condition)).toEqual(['not-well-formed']);
    expect(run.stanzas).toEqual([]);
    expect(run.parser.bytesBuffered).toBe(0);
  });

  it('never throws from write, whatever the handlers do', () => {
    const thrower = new StreamParser({
      onStreamStart() {},
      onStanza() {
        throw new TypeError('handler bug');
      },
      onStreamEnd() {},
      onStreamError() {
        throw new Error('error handler bug');
      },
    });
    expect(() => thrower.write(bytes(`${HEADER}<presence/><presence/>`))).not.toThrow();
    expect(() => thrower.write(bytes('<presence/>'))).not.toThrow();

    const errors: string[] = [];
    const p = new StreamParser({
      onStreamStart() {},
      onStanza() {
        throw new TypeError('handler bug');
      },
      onStreamEnd() {},
      onStreamError: (e) => errors.push(e.condition),
    });
    p.write(bytes(`${HEADER}<presence/><presence/>`));
    expect(errors).toEqual(['internal-server-error']);
  });

  it('reports a StreamError thrown by a handler with its own condition', () => {
    const errors: string[] = [];
    const p = new StreamParser({
      onStreamStart() {},
      onStanza() {
        throw new StreamError('not-authorized');
      },
      onStreamEnd() {},
      onStreamError: (e) => errors.push(e.condition),
    });
    p.write(bytes(`${HEADER}<message/><message/>`));
    expect(errors).toEqual(['not-authorized']);
  });

  it('processes a chunk written re-entrantly from a handler after the current one', () => {
    const seen: string[] = [];
    const p: StreamParser = new StreamParser({
      onStreamStart() {},
      onStanza(el) {
        seen.push(el.name);
        if (el.name === 'a') p.write(bytes('<c/>'));
      },
      onStreamEnd() {},
      onStreamError: (e) => seen.push(`error:${e.condition}`),
    });
    p.write(bytes(`${HEADER}<a/><b/>`));
    expect(seen).toEqual(['a', 'b', 'c']);
  });
});

// ---- 11. reset() ------------------------------------------------------------------------------------

describe('reset()', () => {
  it('discards bytes pipelined after <starttls/> and parses the restarted stream', () => {
    const reset = (el: Element, parser: StreamParser): void => {
      if (el.name === 'starttls' || el.name === 'success') parser.reset();
    };
    for (const ch of CHUNKERS) {
      const run = newRun(undefined, reset);
      const input = `${HEADER}<starttls xmlns='${NS.TLS}'/><message to='victim@example.com'><body>injected</body></message>`;
      for (const c of ch.split(bytes(input))) run.parser.write(c);
      // Only chunks that arrive after the reset belong to the new stream; with small chunks the
      // tail of the injected message would arrive later and be parsed as a new (invalid) stream.
      if (ch.name === 'whole') {
        expect(run.events.map((e) => e.t)).toEqual(['start', 'stanza']);
        run.parser.write(bytes(`${HEADER}<auth xmlns='${NS.SASL}' mechanism='PLAIN'>AA==</auth>`));
        expect(run.events.map((e) => e.t)).toEqual(['start', 'stanza', 'start', 'stanza']);
        expect(run.stanzas.map((s) => s.name)).toEqual(['starttls', 'auth']);
      }
      expect(run.stanzas.some((s) => s.name === 'message'), ch.name).toBe(false);
    }
  });

  it('discards the rest of the chunk after SASL <success/>, including a bogus stream end', () => {
    const run = newRun(undefined, (el, parser) => {
      if (el.name === 'success') parser.reset();
    });
    run.parser.write(bytes(`${HEADER}<success xmlns='${NS.SASL}'/></stream:stream><iq/>`));
    run.parser.write(bytes(`${HEADER}<iq type='set' id='b'/>`));
    expect(run.events.map((e) => e.t)).toEqual(['start', 'stanza', 'start', 'stanza']);
    expect(run.errors).toEqual([]);
  });

  it('drops partial stanzas and partial UTF-8 sequences when called between writes', () => {
    const run = newRun();
    run.parser.write(Buffer.concat([bytes(`${HEADER}<message><body>`), Buffer.from([0xe2, 0x82])]));
    expect(run.parser.bytesBuffered).toBeGreaterThan(0);
    run.parser.reset();
    expect(run.parser.bytesBuffered).toBe(0);
    run.parser.write(bytes(`${HEADER}<presence/>`));
    expect(run.events.map((e) => e.t)).toEqual(['start', 'start', 'stanza']);
    expect(run.errors).toEqual([]);
  });

  it('resets the stream-header limit and XML declaration position', () => {
    const run = newRun({ maxHeaderBytes: 300 });
    run.parser.write(bytes(HEADER));
    run.parser.reset();
    run.parser.write(bytes(HEADER)); // a new XML declaration at the very start is fine again
    expect(run.events.map((e) => e.t)).toEqual(['start', 'start']);
  });

  it('does not revive a parser that reported an error', () => {
    const run = newRun();
    run.parser.write(bytes('junk'));
    run.parser.reset();
    run.parser.write(bytes(HEADER));
    expect(run.events).toEqual([{ t: 'error', condition: 'not-well-formed' }]);
  });
});

// ---- 12. parseElement --------------------------------------------------------------------------------

describe('parseElement (WebSocket / BOSH)', () => {
  it('parses one complete element from a string or a Buffer', () => {
    const open = parseElement(`<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' version='1.0'/>`);
    expect(open.toString()).toBe('<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="example.com" version="1.0"/>');
    const body = parseElement(
      Buffer.from(
        `\uFEFF<?xml version='1.0' encoding='utf-8'?><body rid='1' xmlns='http://jabber.org/protocol/httpbind'><message xmlns='jabber:client'><body>€ &amp; <![CDATA[<x>]]></body></message></body>\n`,
      ),
    );
    expect(body.getChild('message')?.getChildText('body')).toBe('€ & <x>');
    expect(body.getChild('message')?.attrs.xmlns).toBe('jabber:client');
  });

  it('applies the same restrictions', () => {
    expect(conditionOf(() => parseElement('<a><!-- c --></a>'))).toBe('restricted-xml');
    expect(conditionOf(() => parseElement("<!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>"))).toBe('restricted-xml');
    expect(conditionOf(() => parseElement('<?pi?><a/>'))).toBe('restricted-xml');
    expect(conditionOf(() => parseElement('<a>&x;</a>'))).toBe('not-well-formed');
    expect(conditionOf(() => parseElement('<a>&#1;</a>'))).toBe('not-well-formed');
    expect(conditionOf(() => parseElement("<?xml version='1.1'?><a/>"))).toBe('unsupported-version');
    expect(conditionOf(() => parseElement("<?xml version='1.0' encoding='latin1'?><a/>"))).toBe('unsupported-encoding');
    expect(conditionOf(() => parseElement(Buffer.from([0x3c, 0x61, 0x3e, 0xc0, 0xaf, 0x3c, 0x2f, 0x61, 0x3e])))).toBe('not-well-formed');
    expect(conditionOf(() => parseElement('<a>\uD800</a>'))).toBe('not-well-formed');
    expect(conditionOf(() => parseElement('<p:a/>'))).toBe('not-well-formed');
  });

  it('requires exactly one complete root element', () => {
    for (const bad of ['', '   ', '<a>', '<a/><b/>', '<a/>text', 'text<a/>', '<a></b>']) {
      expect(conditionOf(() => parseElement(bad)), JSON.stringify(bad)).toBe('not-well-formed');
    }
    expect(parseElement(' <a/> \n').name).toBe('a');
  });

  it('applies the size, depth and attribute limits', () => {
    expect(conditionOf(() => parseElement(`<a>${'x'.repeat(300_000)}</a>`))).toBe('policy-violation');
    expect(conditionOf(() => parseElement(Buffer.alloc(300_000, 0x20)))).toBe('policy-violation');
    expect(parseElement(`<a>${'é'.repeat(100)}</a>`, { maxStanzaBytes: 207 }).name).toBe('a');
    expect(conditionOf(() => parseElement(`<a>${'é'.repeat(100)}</a>`, { maxStanzaBytes: 206 }))).toBe('policy-violation');
    expect(parseElement(`${'<a>'.repeat(32)}${'</a>'.repeat(32)}`).name).toBe('a');
    expect(conditionOf(() => parseElement(`${'<a>'.repeat(33)}${'</a>'.repeat(33)}`))).toBe('policy-violation');
    expect(conditionOf(() => parseElement(`<a ${Array.from({ length: 65 }, (_, i) => `x${i}='1'`).join(' ')}/>`))).toBe(
      'policy-violation',
    );
  });
});
