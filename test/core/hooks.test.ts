// The hook bus: fired hooks (HookMap) and fold hooks (FoldMap) are disjoint kinds, so a handler of
// the wrong kind does not compile (checked by `tsc` in npm test through the @ts-expect-error lines,
// which fail the type check if the error ever goes away); fire stops at HANDLED, fold threads.
import { describe, expect, it } from 'vitest';
import { HANDLED, HookBus } from '../../src/core/hooks.js';
import { silentLogger } from '../../src/core/logger.js';
import '../../src/modules/roster/index.js';
import '../../src/core/server.js';

describe('HookBus', () => {
  it('keeps fired and folded hooks apart at compile time', () => {
    const bus = new HookBus(silentLogger());
    // @ts-expect-error 'roster.broadcast-targets' is a fold hook: it takes folders, not handlers
    bus.on('roster.broadcast-targets', () => HANDLED);
    // @ts-expect-error 'roster.changed' is a fired hook: it cannot be folded
    bus.onFold('roster.changed', (v) => v);
    // @ts-expect-error nor can its value be folded
    void bus.fold('server.stopping', { reason: 'x' });
    expect(bus.has('roster.changed')).toBe(true); // (registered anyway at run time by the line above)
  });

  it('fire runs by descending priority and stops at the first HANDLED; fold threads a value through all', async () => {
    const bus = new HookBus(silentLogger());
    const calls: string[] = [];
    bus.on('server.stopping', () => void calls.push('low'), 1);
    bus.on('server.stopping', () => {
      calls.push('high');
      return HANDLED;
    }, 10);
    expect(await bus.fire('server.stopping', { reason: 'test' })).toBe(true);
    expect(calls).toEqual(['high']);
    bus.onFold('roster.broadcast-targets', (ev) => {
      ev.targets.delete('blocked@example.com');
      return ev;
    });
    const out = await bus.fold('roster.broadcast-targets', { user: undefined as never, targets: new Set(['a@example.com', 'blocked@example.com']) });
    expect([...out.targets]).toEqual(['a@example.com']);
  });
});
