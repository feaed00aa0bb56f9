// XEP-0092 Software Version of the server.
import { Element } from 'ltx';
import { z } from 'zod';
import { defineModule } from '../core/module.js';
import { NS } from '../xmpp/ns.js';

export default defineModule({
  name: 'version',
  xeps: ['0092'],
  options: z
    .object({
      showOs: z.boolean().default(false).describe('Include the operating system in the answer'),
    })
    .strict(),
  setup(ctx) {
    ctx.iq('get', NS.VERSION, 'query', () => {
      const q = new Element('query', { xmlns: NS.VERSION });
      q.c('name').t('Parley');
      q.c('version').t(PARLEY_VERSION);
      if (ctx.options.showOs) q.c('os').t(`${process.platform} ${process.arch}, Node.js ${process.versions.node}`);
      return q;
    });
  },
});

export const PARLEY_VERSION = '0.1.0';
