// XEP-0199 XMPP Ping: answer pings to the server and to accounts (the session pings idle clients).
import { z } from 'zod';
import { defineModule } from '../core/module.js';
import { NS } from '../xmpp/ns.js';

export default defineModule({
  name: 'ping',
  xeps: ['0199'],
  options: z.object({}).strict(),
  setup(ctx) {
    ctx.addFeature(NS.PING, 'both');
    ctx.iq('get', NS.PING, 'ping', () => undefined, 'both');
  },
});
