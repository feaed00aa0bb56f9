// Unit checks of the avatar helpers in src/modules/avatars.ts: strict base64, type sniffing over a
// client's label, the size cap before decoding, and width/height from PNG, GIF and JPEG headers.
import { describe, expect, it } from 'vitest';
import { checkImage, decodeBase64, dimensions } from '../../src/modules/avatars.js';

const gif = Buffer.concat([Buffer.from('GIF89a', 'latin1'), Buffer.from([0x40, 0x01, 0xf0, 0x00]), Buffer.alloc(20)]);

describe('avatar helpers', () => {
  it('decodes only strict base64 (whitespace allowed)', () => {
    expect(decodeBase64('aGVs\nbG8=')?.toString()).toBe('hello');
    for (const bad of ['', 'a', 'aGVsbG8', 'aGV*bG8=', 'aG=sbG8=', '====']) expect(decodeBase64(bad)).toBeNull();
  });

  it('uses the bytes over the label, refuses non-images and oversize data', () => {
    const img = checkImage(gif.toString('base64'), 'image/png', 1000);
    expect(img).toMatchObject({ type: 'image/gif', width: 320, height: 240 });
    expect(checkImage(Buffer.from('plain').toString('base64'), 'text/plain', 1000)).toMatch(/not a PNG/);
    // An image label on bytes without an image signature is not enough.
    expect(checkImage(Buffer.from('opaque bytes').toString('base64'), 'image/png', 1000)).toMatch(/not a PNG/);
    expect(checkImage(gif.toString('base64'), null, 10)).toMatch(/larger than 10/);
    expect(checkImage('%%%%', 'image/png', 1000)).toBe('malformed base64');
  });

  it('reads no dimensions from a truncated or odd JPEG', () => {
    expect(dimensions(Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00]), 'image/jpeg')).toEqual({});
    expect(dimensions(Buffer.from([0xff, 0xd8, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]), 'image/jpeg')).toEqual({});
    expect(dimensions(Buffer.alloc(10), 'image/png')).toEqual({});
  });
});
