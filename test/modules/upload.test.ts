// XEP-0363 upload helpers: file name sanitizing (separators, controls, bidi overrides, length cap
// keeping the extension), media type parsing, the served type / disposition policy and RFC 6266
// Content-Disposition encoding.
import { describe, expect, it } from 'vitest';
import { contentDisposition, mediaType, sanitizeFilename, servedType } from '../../src/modules/upload.js';

describe('upload helpers', () => {
  it('sanitizes file names', () => {
    expect(sanitizeFilename('photo.jpg')).toBe('photo.jpg');
    expect(sanitizeFilename('../../etc/passwd')).toBe('_.._etc_passwd');
    expect(sanitizeFilename('..\\..\\boot.ini')).toBe('_.._boot.ini');
    expect(sanitizeFilename('/abs/path.txt')).toBe('_abs_path.txt');
    expect(sanitizeFilename('.hidden')).toBe('hidden');
    expect(sanitizeFilename('evil\u202egnp.exe')).toBe('evilgnp.exe');
    expect(sanitizeFilename('a\r\nb\u0000c.txt')).toBe('abc.txt');
    expect(sanitizeFilename('Cafe\u0301.txt')).toBe('Café.txt'); // NFC
    for (const bad of ['', '   ', '...', '\u0000\u0001']) expect(sanitizeFilename(bad)).toBeNull();
    const long = sanitizeFilename(`${'é'.repeat(300)}.jpeg`) as string;
    expect([...long]).toHaveLength(200);
    expect(long.endsWith('.jpeg')).toBe(true);
    const noExt = sanitizeFilename('x'.repeat(500)) as string;
    expect(noExt).toHaveLength(200);
  });

  it('parses media types and refuses anything else', () => {
    expect(mediaType('Image/PNG')).toBe('image/png');
    expect(mediaType('text/plain; charset=utf-8')).toBe('text/plain');
    expect(mediaType(undefined)).toBeNull();
    for (const bad of ['image', 'text/html\r\nX: y', '/png', 'a/b c', `a/${'b'.repeat(200)}`]) expect(mediaType(bad)).toBeNull();
  });

  it('serves only safe types inline; scriptable ones as octet streams', () => {
    expect(servedType('image/jpeg')).toEqual({ type: 'image/jpeg', inline: true });
    expect(servedType('text/plain')).toEqual({ type: 'text/plain; charset=utf-8', inline: true });
    expect(servedType('application/pdf')).toEqual({ type: 'application/pdf', inline: false });
    for (const t of ['text/html', 'image/svg+xml', 'application/xhtml+xml', 'text/xml', 'application/javascript']) {
      expect(servedType(t)).toEqual({ type: 'application/octet-stream', inline: false });
    }
  });

  it('encodes Content-Disposition per RFC 6266 / RFC 8187', () => {
    expect(contentDisposition('attachment', 'a "b" \\c%.txt')).toBe(`attachment; filename="a _b_ _c_.txt"; filename*=UTF-8''a%20%22b%22%20%5Cc%25.txt`);
    expect(contentDisposition('inline', "l'été (1).png")).toBe(`inline; filename="l'_t_ (1).png"; filename*=UTF-8''l%27%C3%A9t%C3%A9%20%281%29.png`);
  });
});
