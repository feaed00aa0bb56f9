// XEP-0030 registry: identities and features that modules declare, plus XEP-0115 hashing.
import { createHash } from 'node:crypto';
import type { DiscoIdentity, IqTarget } from './module.js';

export class DiscoRegistry {
  readonly identities: DiscoIdentity[] = [{ category: 'server', type: 'im', name: 'Parley' }];
  private readonly serverFeatures = new Set<string>();
  private readonly accountFeatures = new Set<string>();
  private capsCache: string | null = null;

  addFeature(ns: string, target: IqTarget = 'server'): () => void {
    if (target !== 'account') this.serverFeatures.add(ns);
    if (target !== 'server') this.accountFeatures.add(ns);
    this.capsCache = null;
    return () => {
      if (target !== 'account') this.serverFeatures.delete(ns);
      if (target !== 'server') this.accountFeatures.delete(ns);
      this.capsCache = null;
    };
  }

  addIdentity(identity: DiscoIdentity): () => void {
    this.identities.push(identity);
    this.capsCache = null;
    return () => {
      const i = this.identities.indexOf(identity);
      if (i !== -1) this.identities.splice(i, 1);
      this.capsCache = null;
    };
  }

  features(target: 'server' | 'account', extra: string[] = []): string[] {
    const set = new Set(target === 'server' ? this.serverFeatures : this.accountFeatures);
    for (const f of extra) set.add(f);
    set.add('http://jabber.org/protocol/disco#info');
    return [...set].sort();
  }

  /** XEP-0115 §5.1 verification string, SHA-1, base64. */
  capsVer(features: string[]): string {
    if (this.capsCache) return this.capsCache;
    const ids = this.identities
      .map((i) => `${i.category}/${i.type}//${i.name ?? ''}`)
      .sort();
    const s = `${ids.join('<')}<${[...features].sort().join('<')}<`;
    this.capsCache = createHash('sha1').update(s, 'utf8').digest('base64');
    return this.capsCache;
  }
}
