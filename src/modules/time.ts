// XEP-0202 Entity Time of the server.
import { Element } from 'ltx';
import { z } from 'zod';
import { defineModule } from '../core/module.js';
import { NS } from '../xmpp/ns.js';

export default defineModule({
  name: 'time',
  xeps: ['0202'],
  options: z.object({}).strict(),
  setup(ctx) {
    ctx.iq('get', NS.TIME, 'time', () => {
      const now = new Date();
      const off = -now.getTimezoneOffset();
      const sign = off >= 0 ? '+' : '-';
      const abs = Math.abs(off);
      const tzo = `${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
      const t = new Element('time', { xmlns: NS.TIME });
      t.c('tzo').t(tzo);
      t.c('utc').t(now.toISOString().replace(/\.\d{3}Z$/, 'Z'));
      return t;
    });
  },
});
