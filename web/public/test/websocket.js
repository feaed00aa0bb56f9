// A minimal XMPP-over-WebSocket client (RFC 7395) using only the browser's WebSocket and DOMParser:
// <open/>, SASL PLAIN, stream restart, resource binding, presence, then one chat message to `peer`.
// Query string: user, password, peer (a full or bare JID), body. The test reads window.xmppTest.
/* global URLSearchParams, location, window, document, WebSocket, DOMParser, btoa */
'use strict';
(function () {
  const FRAMING = 'urn:ietf:params:xml:ns:xmpp-framing';
  const SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';
  const BIND = 'urn:ietf:params:xml:ns:xmpp-bind';
  const params = new URLSearchParams(location.search);
  const user = params.get('user') || '';
  const password = params.get('password') || '';
  const peer = params.get('peer') || '';
  const body = params.get('body') || 'hello from the browser';
  const domain = params.get('domain') || 'localhost';
  const state = { state: 'starting', jid: '', received: [], errors: [], protocol: '', closeCode: null };
  window.xmppTest = state;

  function setState(s) {
    state.state = s;
    document.getElementById('state').textContent = s;
  }
  function log(text) {
    const li = document.createElement('li');
    li.textContent = text; // rendered as text, never as markup
    document.getElementById('log').appendChild(li);
  }
  function esc(s) {
    return s.replace(/[&<>"']/g, (c) => '&#' + c.charCodeAt(0) + ';');
  }
  function open() {
    ws.send("<open xmlns='" + FRAMING + "' to='" + esc(domain) + "' version='1.0'/>");
  }

  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(scheme + '//' + location.host + '/xmpp-websocket', 'xmpp');
  let authenticated = false;

  ws.onopen = () => {
    state.protocol = ws.protocol;
    setState('connected');
    open();
  };
  ws.onclose = (ev) => {
    state.closeCode = ev.code;
    if (state.state !== 'error') setState('closed');
  };
  ws.onerror = () => {
    state.errors.push('websocket error');
    setState('error');
  };
  ws.onmessage = (ev) => {
    const doc = new DOMParser().parseFromString(ev.data, 'text/xml');
    const el = doc.documentElement;
    if (!el || el.getElementsByTagName('parsererror').length) {
      state.errors.push('unparseable message: ' + ev.data);
      setState('error');
      return;
    }
    const name = el.localName;
    const ns = el.namespaceURI;
    if (name === 'open' && ns === FRAMING) return;
    if (name === 'close' && ns === FRAMING) {
      ws.close();
      return;
    }
    if (name === 'error' && el.prefix === 'stream') {
      state.errors.push('stream error: ' + ev.data);
      setState('error');
      return;
    }
    if (name === 'features') {
      if (!authenticated) {
        const mechs = Array.from(el.getElementsByTagNameNS(SASL, 'mechanism')).map((m) => m.textContent);
        if (!mechs.includes('PLAIN')) {
          state.errors.push('PLAIN not offered: ' + mechs.join(','));
          setState('error');
          return;
        }
        const payload = btoa(unescape(encodeURIComponent('\u0000' + user + '\u0000' + password)));
        ws.send("<auth xmlns='" + SASL + "' mechanism='PLAIN'>" + payload + '</auth>');
      } else {
        ws.send("<iq xmlns='jabber:client' type='set' id='bind1'><bind xmlns='" + BIND + "'><resource>browser</resource></bind></iq>");
      }
      return;
    }
    if (name === 'success' && ns === SASL) {
      authenticated = true;
      open(); // stream restart (RFC 7395 §3.3.2)
      return;
    }
    if (name === 'failure' && ns === SASL) {
      state.errors.push('authentication failed');
      setState('error');
      return;
    }
    if (name === 'iq' && el.getAttribute('id') === 'bind1') {
      const jid = el.getElementsByTagNameNS(BIND, 'jid')[0];
      if (el.getAttribute('type') !== 'result' || !jid) {
        state.errors.push('bind failed');
        setState('error');
        return;
      }
      state.jid = jid.textContent;
      document.getElementById('jid').textContent = state.jid;
      ws.send("<presence xmlns='jabber:client'/>");
      ws.send("<message xmlns='jabber:client' type='chat' to='" + esc(peer) + "'><body>" + esc(body) + '</body></message>');
      setState('bound');
      return;
    }
    if (name === 'message') {
      const b = el.getElementsByTagName('body')[0];
      if (b) {
        state.received.push({ from: el.getAttribute('from'), body: b.textContent });
        log(el.getAttribute('from') + ': ' + b.textContent);
      }
      return;
    }
    if (name === 'iq' && el.getAttribute('type') === 'get') {
      // Answer server pings (and refuse anything else) so that the session stays healthy.
      const ping = el.getElementsByTagNameNS('urn:xmpp:ping', 'ping')[0];
      const type = ping ? 'result' : 'error';
      const inner = ping ? '' : "<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>";
      ws.send("<iq xmlns='jabber:client' type='" + type + "' id='" + esc(el.getAttribute('id') || '') + "' to='" + esc(el.getAttribute('from') || '') + "'>" + inner + '</iq>');
    }
  };
})();
