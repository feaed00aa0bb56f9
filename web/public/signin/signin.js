// The sign-in page (issue 9). Without a browser session it lists the identity providers
// (GET /sso/providers) as links to /sso/login that return here; with one (GET /sso/session) it asks for an XMPP
// token (POST /sso/token with the session's CSRF token) and logs in over WebSocket (RFC 7395) with
// SASL OAUTHBEARER (RFC 7628), binds a resource and sends presence. "Sign out" posts /sso/logout
// and follows the identity provider's logout URL when there is one. Tests read window.parleySso.
/* global window, document, location, fetch, WebSocket, DOMParser, btoa, encodeURIComponent, unescape */
'use strict';
(function () {
  const FRAMING = 'urn:ietf:params:xml:ns:xmpp-framing';
  const SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';
  const BIND = 'urn:ietf:params:xml:ns:xmpp-bind';
  const state = { state: 'starting', jid: '', user: '', errors: [], mechanisms: [] };
  window.parleySso = state;
  const $ = (id) => document.getElementById(id);

  function setState(s) {
    state.state = s;
    $('state').textContent = s;
  }
  function fail(msg) {
    state.errors.push(msg);
    setState('error');
  }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => '&#' + c.charCodeAt(0) + ';');
  }

  async function main() {
    const session = await (await fetch('/sso/session', { credentials: 'same-origin' })).json();
    if (!session.authenticated) {
      const providers = await (await fetch('/sso/providers', { credentials: 'same-origin' })).json();
      for (const p of providers) {
        const li = document.createElement('li');
        const a = document.createElement('a');
        // Back to this very page after the identity provider (the server allows only known pages).
        a.href = '/sso/login?provider=' + encodeURIComponent(p.name) + '&return=' + encodeURIComponent(location.pathname);
        a.textContent = 'Sign in with ' + p.label; // text, never markup
        li.appendChild(a);
        $('providers').appendChild(li);
      }
      setState('signed-out');
      return;
    }
    state.user = session.jid;
    $('name').textContent = session.displayName || session.jid;
    $('jid').textContent = session.jid;
    $('who').hidden = false;
    $('logout').hidden = false;
    $('logout').onclick = () => logout(session.csrf);
    setState('signed-in');
    const res = await fetch('/sso/token', { method: 'POST', credentials: 'same-origin', headers: { 'X-CSRF-Token': session.csrf } });
    if (!res.ok) return fail('token request failed: ' + res.status);
    const t = await res.json();
    connect(t.jid, t.token, session.host);
  }

  async function logout(csrf) {
    const res = await fetch('/sso/logout', { method: 'POST', credentials: 'same-origin', headers: { 'X-CSRF-Token': csrf } });
    const out = await res.json();
    setState('signed-out');
    if (out.redirect) location.assign(out.redirect);
  }

  function connect(jid, token, domain) {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(scheme + '//' + location.host + '/xmpp-websocket', 'xmpp');
    state.ws = undefined;
    let authenticated = false;
    const open = () => ws.send("<open xmlns='" + FRAMING + "' to='" + esc(domain) + "' version='1.0'/>");
    ws.onopen = () => {
      setState('connecting');
      open();
    };
    ws.onclose = () => {
      if (state.state !== 'error' && state.state !== 'signed-out') setState('closed');
    };
    ws.onerror = () => fail('websocket error');
    ws.onmessage = (ev) => {
      const el = new DOMParser().parseFromString(ev.data, 'text/xml').documentElement;
      if (!el || el.getElementsByTagName('parsererror').length) return fail('unparseable message');
      const name = el.localName;
      if (name === 'open') return;
      if (name === 'close') return ws.close();
      if (name === 'error' && el.prefix === 'stream') return fail('stream error: ' + ev.data);
      if (name === 'features') {
        if (authenticated) {
          ws.send("<iq xmlns='jabber:client' type='set' id='bind1'><bind xmlns='" + BIND + "'/></iq>");
          return;
        }
        state.mechanisms = Array.from(el.getElementsByTagNameNS(SASL, 'mechanism')).map((m) => m.textContent);
        if (!state.mechanisms.includes('OAUTHBEARER')) return fail('OAUTHBEARER not offered: ' + state.mechanisms.join(','));
        // RFC 7628 §3.1: gs2 header with the authorization identity, then the bearer token.
        // RFC 5801 saslname: "=" and "," are escaped.
        const saslname = jid.replace(/=/g, '=3D').replace(/,/g, '=2C');
        const msg = 'n,a=' + saslname + ',\u0001auth=Bearer ' + token + '\u0001\u0001';
        ws.send("<auth xmlns='" + SASL + "' mechanism='OAUTHBEARER'>" + btoa(unescape(encodeURIComponent(msg))) + '</auth>');
        return;
      }
      if (name === 'success') {
        authenticated = true;
        open();
        return;
      }
      if (name === 'failure' || name === 'challenge') {
        // A challenge is RFC 7628's error report; the client ends the exchange with a dummy response.
        if (name === 'challenge') ws.send("<response xmlns='" + SASL + "'>AQ==</response>");
        return fail('authentication failed: ' + ev.data);
      }
      if (name === 'iq' && el.getAttribute('id') === 'bind1') {
        const j = el.getElementsByTagNameNS(BIND, 'jid')[0];
        if (el.getAttribute('type') !== 'result' || !j) return fail('bind failed');
        state.jid = j.textContent;
        ws.send("<presence xmlns='jabber:client'/>");
        setState('bound');
        return;
      }
      if (name === 'iq' && el.getAttribute('type') === 'get') {
        const ping = el.getElementsByTagNameNS('urn:xmpp:ping', 'ping')[0];
        const type = ping ? 'result' : 'error';
        const inner = ping ? '' : "<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>";
        ws.send("<iq xmlns='jabber:client' type='" + type + "' id='" + esc(el.getAttribute('id') || '') + "' to='" + esc(el.getAttribute('from') || '') + "'>" + inner + '</iq>');
      }
    };
  }

  main().catch((err) => fail(String(err)));
})();
