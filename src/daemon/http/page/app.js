// herald status page: a small SignalR JSON-protocol client (negotiate with herald, follow
// {url, accessToken} to the service, negotiate there, WebSocket, handshake, pings, reconnect
// with backoff) and the page that shows what arrives. No framework, nothing from outside.
'use strict';
(() => {
  const cfg = JSON.parse(document.getElementById('herald-config').textContent);
  const query = new URLSearchParams(location.search);
  const field = query.get('field') || cfg.severityField || 'status';
  const RS = '\x1e';
  const PING_MS = 15000;
  const SERVER_TIMEOUT_MS = 30000;
  const HANDSHAKE_MS = 15000;
  const BACKOFF_MS = [0, 1000, 2000, 5000, 10000];
  const MAX_HISTORY = 300;
  const $ = (id) => document.getElementById(id);

  // ---- severity -------------------------------------------------------------------------
  const LABELS = {
    operational: 'Operational', degraded: 'Degraded', outage: 'Outage',
    maintenance: 'Maintenance', unknown: 'Unknown',
  };
  function severity(value) {
    const t = String(value == null ? '' : value).toLowerCase();
    if (/maint|scheduled|planned/.test(t)) return 'maintenance';
    if (/degrad|partial|slow|delay|warn|minor|impair|yellow|amber/.test(t)) return 'degraded';
    if (/outage|down|major|critical|fail|error|unavailable|offline|red/.test(t)) return 'outage';
    if (/operational|ok\b|okay|healthy|up\b|normal|resolved|running|green|fine/.test(t)) return 'operational';
    return 'unknown';
  }

  // ---- messages -> entries ---------------------------------------------------------------
  function entry(target, args, meta) {
    const first = Array.isArray(args) && args.length ? args[0] : null;
    const obj = first && typeof first === 'object' && !Array.isArray(first) ? first : null;
    let status; let text; let source; let time; let id = meta.id || null;
    if (obj) {
      status = obj[field];
      text = obj.message || obj.text || obj.description || obj.detail || '';
      source = obj.source || obj.service || obj.component || obj.system || '';
      time = obj.timestamp || obj.time || meta.time;
      if (!id && obj.id != null && obj.id !== '') id = String(obj.id);
    } else {
      status = first;
      text = args && typeof args[1] === 'string' ? args[1] : '';
      time = meta.time;
    }
    let ms = Date.parse(time);
    if (Number.isNaN(ms)) ms = Date.parse(meta.time);
    if (Number.isNaN(ms)) ms = Date.now();
    return {
      id, target, time: ms,
      status: status == null ? '' : (typeof status === 'object' ? JSON.stringify(status) : String(status)),
      text: typeof text === 'object' ? JSON.stringify(text) : String(text),
      source: String(source || cfg.hub),
      sig: target + RS + canonical(args),
    };
  }

  // ---- rendering -------------------------------------------------------------------------
  const seen = new Set();            // message ids shown
  const unnamed = new Map();         // live messages without an id: signature -> true
  const cards = new Map();           // source -> {li, time}
  let lastId = null;                 // newest history id seen, for `after=`

  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
    }
    for (const c of children || []) e.append(c);
    return e;
  }
  function timeEl(ms) {
    const d = new Date(ms);
    const today = new Date().toDateString() === d.toDateString();
    return el('time', {
      datetime: d.toISOString(),
      text: today ? d.toLocaleTimeString() : d.toLocaleString(),
    });
  }
  function sevEl(e) {
    const sev = severity(e.status);
    const label = e.status || LABELS[sev];
    return el('span', { class: 'sev', 'data-sev': sev, text: label });
  }

  // JSON with sorted keys, so a live message and its history copy compare equal.
  function canonical(v) {
    if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']';
    if (v && typeof v === 'object') {
      return '{' + Object.keys(v).sort().map((k) => JSON.stringify(k) + ':' + canonical(v[k])).join(',') + '}';
    }
    return JSON.stringify(v);
  }

  // origin: 'retained' (the card only), 'history' or 'live' (the card and the history list).
  function show(e, origin) {
    if (origin !== 'retained') {
      if (e.id) {
        if (seen.has(e.id)) return;
        seen.add(e.id);
        // A wall screen stays open for weeks: forget the oldest ids.
        if (seen.size > 5000) seen.delete(seen.values().next().value);
      }
      if (origin === 'live' && !e.id) {
        unnamed.set(e.sig, true);
        if (unnamed.size > 1000) unnamed.delete(unnamed.keys().next().value);
      }
      if (origin === 'history' && unnamed.has(e.sig)) {
        // Already shown live, before its id was known.
        unnamed.delete(e.sig);
        return;
      }
    }
    const sev = severity(e.status);
    // The latest status per source.
    const card = cards.get(e.source);
    if (!card || e.time > card.time || (e.time === card.time && origin === 'live')) {
      const li = el('li', { class: 'source', 'data-sev': sev, 'data-source': e.source, 'data-origin': origin }, [
        el('h3', { text: e.source }),
        sevEl(e),
        el('p', { class: 'text', text: e.text }),
        el('p', { class: 'when' }, ['Updated ', timeEl(e.time)]),
      ]);
      if (origin === 'live') li.classList.add('fresh');
      if (card) card.li.replaceWith(li); else $('sources').append(li);
      cards.set(e.source, { li, time: e.time });
      $('empty').hidden = true;
    }
    if (origin === 'retained') return;
    // The history, newest first.
    const list = $('history');
    const item = el('li', {
      'data-time': String(e.time), 'data-origin': origin, 'data-sev': sev,
      ...(e.id ? { 'data-id': e.id } : {}),
    }, [
      sevEl(e),
      el('span', { class: 'text', text: (e.source !== cfg.hub ? e.source + ': ' : '') + (e.text || e.status) }),
      timeEl(e.time),
    ]);
    let before = null;
    for (const li of list.children) {
      if (Number(li.dataset.time) < e.time) { before = li; break; }
    }
    list.insertBefore(item, before);
    while (list.children.length > MAX_HISTORY) list.lastElementChild.remove();
    $('last-update').textContent = 'Last update: ' + new Date(e.time).toLocaleString() + '.';
  }

  // ---- herald's endpoints ----------------------------------------------------------------
  async function getJson(path) {
    const r = await fetch(path, { headers: { Accept: 'application/json' }, cache: 'no-store' });
    if (!r.ok) { const err = new Error(path + ': HTTP ' + r.status); err.status = r.status; throw err; }
    return r.json();
  }
  async function loadRetained() {
    const body = await getJson(cfg.retained);
    for (const m of body.retained || []) show(entry(m.target, m.arguments, m), 'retained');
  }
  // `since`: ask only for what came after the newest id seen.
  async function loadHistory(since) {
    if (!cfg.history) return;
    let url = cfg.history + (cfg.history.includes('?') ? '&' : '?') + 'limit=' + MAX_HISTORY;
    if (since && lastId) url += '&after=' + encodeURIComponent(lastId);
    const body = await getJson(url);
    if (body.reset && since) {
      // Our last id is gone from the history: start the list again from what is kept.
      $('history').replaceChildren();
      seen.clear();
      unnamed.clear();
    }
    for (const m of body.messages || []) {
      show(entry(m.target, m.arguments, m), 'history');
      if (m.id) lastId = m.id;
    }
  }

  // Presence (`{"connections", "users"}`): shown while the endpoint exists.
  let presenceTimer = null;
  async function pollPresence() {
    clearTimeout(presenceTimer);
    try {
      const p = await getJson(cfg.presence);
      $('viewer-count').textContent = String(p.connections);
      $('viewers').title = p.users != null ? p.users + ' signed-in users' : '';
      $('viewers').hidden = false;
      presenceTimer = setTimeout(pollPresence, PING_MS);
    } catch (err) {
      $('viewers').hidden = true;
      if (err.status !== 404) presenceTimer = setTimeout(pollPresence, PING_MS * 2);
    }
  }

  // ---- connection state ------------------------------------------------------------------
  function setState(state, detail) {
    const c = $('connection');
    c.dataset.state = state;
    $('connection-text').textContent = state + (detail ? ' (' + detail + ')' : '');
    $('reconnect').hidden = state === 'connected' || state === 'connecting';
  }

  // ---- SignalR client --------------------------------------------------------------------
  function negotiateUrl(url) {
    const u = new URL(url, location.href);
    u.pathname = u.pathname.replace(/\/?$/, '/negotiate');
    u.searchParams.set('negotiateVersion', '1');
    return u.toString();
  }
  async function postNegotiate(url, token) {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    const r = await fetch(url, { method: 'POST', headers, cache: 'no-store' });
    if (!r.ok) throw new Error('negotiate ' + url.split('?')[0] + ': HTTP ' + r.status);
    const body = await r.json();
    if (body.error) throw new Error('negotiate: ' + body.error);
    return body;
  }
  // -> {wsUrl}: follows redirects until a negotiate answer with a connection id.
  async function negotiate() {
    let body = await postNegotiate(cfg.negotiate, null);
    let url = null; let token = null;
    for (let i = 0; i < 10 && body.url; i++) {
      url = body.url;
      if (body.accessToken) token = body.accessToken;
      body = await postNegotiate(negotiateUrl(url), token);
    }
    if (!url) throw new Error('negotiate named no service URL');
    const id = body.connectionToken || body.connectionId;
    const ws = (body.availableTransports || []).some((t) => t.transport === 'WebSockets');
    if (!id || !ws) throw new Error('the service offers no WebSocket transport');
    const u = new URL(url, location.href);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.searchParams.set('id', id);
    if (token) u.searchParams.set('access_token', token);
    return u.toString();
  }

  let socket = null;
  let attempt = 0;
  let retryTimer = null;
  let everConnected = false;

  function open(wsUrl) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrl);
      socket = ws;
      let buffer = '';
      let handshaken = false;
      let lastSent = Date.now();
      let lastHeard = Date.now();
      const send = (obj) => { ws.send(JSON.stringify(obj) + RS); lastSent = Date.now(); };
      const handshakeTimer = setTimeout(() => ws.close(4000, 'handshake timeout'), HANDSHAKE_MS);
      const tick = setInterval(() => {
        if (ws.readyState !== WebSocket.OPEN) return;
        if (Date.now() - lastHeard > SERVER_TIMEOUT_MS) { ws.close(4001, 'server timeout'); return; }
        if (Date.now() - lastSent >= PING_MS) send({ type: 6 });
      }, 1000);
      ws.onopen = () => send({ protocol: 'json', version: 1 });
      ws.onmessage = (ev) => {
        lastHeard = Date.now();
        if (typeof ev.data !== 'string') return;
        buffer += ev.data;
        const frames = buffer.split(RS);
        buffer = frames.pop();
        for (const frame of frames) {
          let msg;
          try { msg = JSON.parse(frame); } catch (_) { ws.close(4002, 'bad frame'); return; }
          if (!handshaken) {
            clearTimeout(handshakeTimer);
            if (msg.error) {
              if (socket === ws) socket = null;
              ws.close(4003, 'handshake refused');
              reject(new Error(msg.error));
              return;
            }
            handshaken = true;
            resolve(ws);
            continue;
          }
          if (msg.type === 1 && !msg.invocationId) {
            const e = entry(msg.target, msg.arguments || [], { time: new Date().toISOString() });
            show(e, 'live');
            if (e.id) lastId = e.id;
          } else if (msg.type === 7) {
            ws.close(1000, 'server closed');
          }
        }
      };
      ws.onclose = () => {
        clearTimeout(handshakeTimer);
        clearInterval(tick);
        if (socket === ws) socket = null; else return;
        if (handshaken) lost();
        else reject(new Error('the connection closed before the handshake'));
      };
    });
  }

  async function connect() {
    clearTimeout(retryTimer);
    if (!everConnected && attempt === 0) setState('connecting');
    try {
      const wsUrl = await negotiate();
      await open(wsUrl);
      everConnected = true;
      attempt = 0;
      setState('connected');
      // Fill what arrived while we were away (or, on first load, what came before).
      try {
        await loadRetained();
        await loadHistory(true);
      } catch (err) {
        console.info('status page: could not read history:', err.message);
      }
      pollPresence();
    } catch (err) {
      console.info('status page: connect failed:', err.message);
      retry();
    }
  }
  function lost() {
    clearTimeout(presenceTimer);
    retry();
  }
  function retry() {
    if (socket) return;
    const base = attempt < BACKOFF_MS.length ? BACKOFF_MS[attempt] : (attempt < 20 ? 15000 : 30000);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    attempt += 1;
    const secs = Math.ceil(delay / 1000);
    const when = secs > 0 ? 'next try in ' + secs + ' s' : 'trying now';
    if (!navigator.onLine || attempt > BACKOFF_MS.length + 1) setState('offline', when);
    else setState('reconnecting', 'attempt ' + attempt + ', ' + when);
    retryTimer = setTimeout(connect, delay);
  }

  // ---- start -----------------------------------------------------------------------------
  function hubNav() {
    if (!cfg.hubs || cfg.hubs.length < 2) return;
    const nav = $('hubs');
    for (const name of cfg.hubs) {
      const a = el('a', { href: '?hub=' + encodeURIComponent(name), text: name });
      if (name === cfg.hub) a.setAttribute('aria-current', 'page');
      nav.append(a);
    }
    nav.hidden = false;
  }

  $('reconnect').addEventListener('click', () => {
    if (socket) return;
    attempt = 0;
    connect();
  });
  window.addEventListener('online', () => { if (!socket) { attempt = 0; connect(); } });
  window.addEventListener('offline', () => { if (!socket) setState('offline'); });

  hubNav();
  document.title = cfg.title;
  (async () => {
    // Retained statuses and recent history first, then live messages.
    try { await loadRetained(); } catch (err) { console.info('status page:', err.message); }
    try { await loadHistory(false); } catch (err) { console.info('status page:', err.message); }
    connect();
  })();
})();
