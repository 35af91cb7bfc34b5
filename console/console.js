// console.js — the jwksd operator console: DOM, fetch and the event stream.
//
// All layout and metric logic lives in timeline.js (pure, unit-tested); this
// module only talks to the server and turns the results into elements. It
// never writes style attributes (the CSP forbids them), never stores
// anything in Web Storage, and keeps the CSRF token in memory only.

import * as TL from './timeline.js';

const $ = (id) => document.getElementById(id);
const SVG_NS = 'http://www.w3.org/2000/svg';

/** The audit event types the stream sends as named SSE events. */
const EVENT_TYPES = ['key.next', 'key.active', 'key.retiring', 'key.retired', 'key.revoked', 'command.refused', 'store.rekeyed', 'store.copied'];
const SESSION_ENDED = 'Your session has ended; sign in again.';
const MAX_EVENTS = 50;
const POLL_MS = 10_000;
const FALLBACK_REFRESH_MS = 30_000;
const METRICS_WINDOW_MS = 5 * TL.MINUTE;

const state = {
  client: null,        // {name, role}
  csrf: null,          // memory only
  expiresAt: null,
  timeline: null,
  offset: 0,           // server clock − local clock, from the last timeline fetch
  view: null,          // {from, to} in ms
  follow: true,        // the view keeps "now" at 2/3 of the width until the user pans
  selected: null,      // kid shown in the detail panel
  updated: 0,          // renders from a fetched timeline (data-updated)
  fetchSeq: 0,         // discards timeline responses that arrive out of order
  appliedSeq: 0,
  seen: new Set(),     // audit seqs already in the events list
  history: [],         // metric samples [{at, metrics}] over the last 5 min
  es: null,
  timers: [],
  refreshTimer: null,
  esRetry: null,
  rendered: null,      // {at, k} of the last timeline render, to move "now" cheaply
  refreshedUpTo: 0,    // the latest upcoming instant a refresh was already scheduled for
  pending: null,       // the action a dialog is open for
};

const serverNow = () => Date.now() + state.offset;
const isViewer = () => state.client?.role !== 'operator';

// ---------------------------------------------------------------------------
// Small DOM helpers (no innerHTML: every server string goes in as text)

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  el.append(...children.flat(Infinity).filter((c) => c != null && c !== false && c !== '').map((c) => (c instanceof Node ? c : String(c))));
  return el;
}

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  el.append(...children.flat(Infinity).filter((c) => c != null && c !== false));
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'style') throw new Error('style attributes are blocked by the CSP');
    el.setAttribute(k, v === true ? '' : String(v));
  }
}

/** <time> with the UTC form and, beside it, a relative time kept fresh by tick(). */
function when(ms, { rel = true } = {}) {
  if (ms == null) return h('span', { class: 'muted' }, '—');
  const parts = [h('time', { datetime: new Date(ms).toISOString() }, TL.formatUtc(ms))];
  if (rel) parts.push(' (', h('span', { 'data-rel-at': ms }, TL.formatRelative(ms, serverNow())), ')');
  return h('span', { class: 'when' }, parts);
}

/** Rebuild a container while keeping keyboard focus on the "same" control (data-focus-key). */
function keepFocus(fn) {
  const key = document.activeElement?.closest?.('[data-focus-key]')?.getAttribute('data-focus-key');
  fn();
  if (key && !document.activeElement?.closest?.('[data-focus-key]')) {
    const again = document.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
    again?.focus({ preventScroll: true });
  }
}

// ---------------------------------------------------------------------------
// API

class ApiError extends Error {
  constructor(status, body, message) {
    super(message);
    this.status = status;
    this.code = body?.code ?? null;
    this.body = body;
  }
}

/**
 * One JSON request to the console API. A 401 anywhere (other than where the
 * caller handles it) means the session is gone: back to the sign-in form.
 */
// Reads are the page's own refreshes unless said otherwise: marked as
// background, they do not push the session's idle end back, so that an
// open tab nobody uses still times out (console.idle_timeout).
async function api(method, path, { body, csrf = false, allow401 = false, background = method === 'GET' } = {}) {
  const headers = { Accept: 'application/json' };
  if (background) headers['X-Console-Background'] = '1';
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (csrf) headers['X-CSRF-Token'] = state.csrf ?? '';
  let res;
  try {
    res = await fetch(`api/${path}`, {
      method,
      headers,
      credentials: 'same-origin',
      cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, null, `The server could not be reached (${e.message}).`);
  }
  let data = null;
  if (res.status !== 204) {
    const text = await res.text();
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data, data?.error ?? `${res.status} ${res.statusText}`.trim());
    if (res.status === 401 && !allow401) sessionEnded(SESSION_ENDED);
    throw err;
  }
  return data;
}

// ---------------------------------------------------------------------------
// Session

function showSignin(message = '') {
  $('console').hidden = true;
  $('whoami').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message;
  $('token').focus();
}

function sessionEnded(message) {
  if (state.client) stopConsole();
  showSignin(message);
}

async function onSignin(e) {
  e.preventDefault();
  const input = $('token');
  const button = $('signin-form').querySelector('button[type="submit"]');
  const token = input.value.trim();
  button.disabled = true;
  $('signin-error').textContent = '';
  try {
    // An empty token signs in with the connection's client certificate
    // alone (mutual TLS), when it identifies an operator or viewer.
    const body = token ? { token } : {};
    const session = await api('POST', 'session', { body, allow401: true });
    input.value = '';
    startConsole(session);
  } catch (err) {
    const msg = {
      401: token ? 'That token was not accepted.' : 'Enter your operator token.',
      403: err.code === 'forbidden'
        ? 'This token belongs to a signer; signers cannot use the console.'
        : err.message,
      429: 'Too many failed attempts; wait a moment and try again.',
    }[err.status] ?? `Sign-in failed: ${err.message}`;
    $('signin-error').textContent = msg;
    input.select();
  } finally {
    button.disabled = false;
  }
}

async function onSignout() {
  try {
    await api('DELETE', 'session', { csrf: true, allow401: true });
  } catch (e) {
    // A 401: the session was already gone. Anything else: it may still
    // stand, and the operator must know.
    if (e.status !== 401) {
      setResult('error', `Sign-out failed: ${e.message}. Close the browser to end the session.`);
      return;
    }
  }
  stopConsole();
  showSignin('You are signed out.');
}

function startConsole(session) {
  state.client = session.client;
  state.csrf = session.csrf;
  state.expiresAt = TL.parseTime(session.expires_at);
  document.body.classList.toggle('is-viewer', isViewer());
  for (const el of document.querySelectorAll('[data-operator-only]')) el.hidden = isViewer();
  // Viewers may look at the dialogs' outlooks but never confirm (the server refuses them anyway).
  $('rotate-confirm').disabled = isViewer();
  $('revoke-confirm').disabled = true;
  $('client-name').textContent = session.client?.name ?? '?';
  $('client-role').textContent = session.client?.role ?? '?';
  $('session-expires').replaceChildren(state.expiresAt ? when(state.expiresAt) : '—');
  $('signin').hidden = true;
  $('whoami').hidden = false;
  $('console').hidden = false;
  $('console-title').focus({ preventScroll: false });

  refreshTimeline().then(backfillEvents, () => {});
  pollHealth();
  openEvents();
  state.timers.push(setInterval(tick, 1000));
  state.timers.push(setInterval(pollHealth, POLL_MS));
  // A safety net if the event stream is down: the timeline still refreshes.
  state.timers.push(setInterval(() => refreshTimeline().catch(() => {}), FALLBACK_REFRESH_MS));
}

function stopConsole() {
  for (const t of state.timers) clearInterval(t);
  clearTimeout(state.refreshTimer);
  clearTimeout(state.esRetry);
  closeEvents();
  for (const d of [$('rotate-dialog'), $('revoke-dialog')]) if (d.open) d.close();
  Object.assign(state, {
    client: null, csrf: null, expiresAt: null, timeline: null, view: null, follow: true,
    selected: null, seen: new Set(), history: [], timers: [], refreshTimer: null, esRetry: null,
    rendered: null, pending: null, refreshedUpTo: 0,
  });
  for (const id of ['events', 'upcoming']) $(id).replaceChildren();
  $('timeline').replaceChildren();
  $('keys-table').tBodies[0].replaceChildren();
  $('action-result').textContent = '';
  $('action-audit-list').replaceChildren();
  $('action-audit').hidden = true;
  $('key-detail').replaceChildren(h('p', { class: 'muted' }, 'Select a key in the timeline or the table.'));
}

// ---------------------------------------------------------------------------
// Timeline: fetch and render

async function refreshTimeline() {
  const seq = ++state.fetchSeq;
  const t0 = Date.now();
  const tl = await api('GET', 'timeline');
  const t1 = Date.now();
  if (seq < state.appliedSeq || !state.client) return; // an older answer, or signed out meanwhile
  state.appliedSeq = seq;
  // Correct the local clock by the server's: its "now" was taken about mid-request.
  const serverAt = TL.parseTime(tl.now);
  if (serverAt != null) state.offset = serverAt - (t0 + t1) / 2;
  state.timeline = tl;
  if (!state.view) {
    state.view = TL.centreOn(serverNow(), TL.defaultLevel(tl).ms);
    state.follow = true;
  }
  state.updated += 1;
  renderAll();
  $('timeline').setAttribute('data-updated', String(state.updated));
}

/** Debounced refresh: a burst of events (one rotation writes several) costs one fetch. */
function scheduleRefresh(delay = 200) {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(() => refreshTimeline().catch(() => {}), delay);
}

function renderAll() {
  const tl = state.timeline;
  $('replica').textContent = tl.replica ?? '—';
  renderTimeline();
  renderKeysTable();
  renderDetail();
  renderUpcoming();
  renderLaneActions();
  if ($('rotate-dialog').open) fillRotateDialog();
  if ($('revoke-dialog').open) fillRevokeDialog();
}

function plotWidth() {
  // The SVG fills its container, but never below 30rem: narrower, it scrolls inside the container.
  const rem = parseFloat(getComputedStyle(document.documentElement).fontSize) || 16;
  return Math.max(Math.floor(30 * rem), Math.floor($('timeline').clientWidth || 800));
}

function renderTimeline() {
  const tl = state.timeline;
  if (!tl || !state.view) return;
  const now = serverNow();
  if (state.follow) state.view = TL.centreOn(now, state.view.to - state.view.from);
  const width = plotWidth();
  const L = TL.layout(tl, state.view, width, { now });
  state.rendered = { at: now, k: (L.right - L.left) / (state.view.to - state.view.from), width, left: L.left, right: L.right, height: L.height };
  keepFocus(() => $('timeline').replaceChildren(buildSvg(L, now)));
  $('timeline-range').textContent = `${TL.formatUtc(state.view.from)} to ${TL.formatUtc(state.view.to)}`;
  updateZoomButtons();
}

// Marker shapes by instant, centred on (0, 0): the shape differs per kind
// so the instants are told apart without colour.
const MARKER_SHAPES = {
  published: () => s('circle', { r: 3.5 }),
  earliest_activation: () => s('path', { d: 'M0,-4 L4,3 L-4,3 Z' }),
  scheduled_activation: () => s('path', { d: 'M0,-4.5 L4.5,0 L0,4.5 L-4.5,0 Z' }),
  activated: () => s('path', { d: 'M0,-5 L5,0 L0,5 L-5,0 Z' }),
  deactivated: () => s('rect', { x: -3.5, y: -3.5, width: 7, height: 7 }),
  retire_at: () => s('path', { d: 'M0,-7 L0,7' }),
  projected_retire: () => s('path', { d: 'M0,-7 L0,7' }),
  retired: () => s('path', { d: 'M-3,-7 L-3,7 M0,-7 L0,7' }),
  revoked: () => s('path', { d: 'M-5,-5 L5,5 M5,-5 L-5,5' }),
};

function buildSvg(L, now) {
  const svg = s('svg', {
    class: 'timeline-svg',
    width: L.width,
    height: L.height,
    viewBox: `0 0 ${L.width} ${L.height}`,
    role: 'group',
    'aria-label': `Key timeline, ${TL.formatUtc(state.view.from)} to ${TL.formatUtc(state.view.to)}`,
  });

  // Lane backgrounds and labels first, so everything else draws on top.
  L.lanes.forEach((lane, i) => {
    svg.append(
      s('rect', { class: `lane-bg ${i % 2 ? 'odd' : 'even'}`, x: 0, y: lane.y, width: L.width, height: lane.height }),
      s('text', { class: 'lane-label', x: 8, y: lane.y + 20 }, lane.alg),
      s('text', { class: 'lane-sub', x: 8, y: lane.y + 35 }, `${lane.bars.length} key${lane.bars.length === 1 ? '' : 's'}`),
    );
  });

  // Axis: grid lines and UTC labels.
  const axis = s('g', { class: 'axis', 'aria-hidden': 'true' });
  axis.append(s('text', { class: 'axis-caption', x: 8, y: 34 }, 'UTC'));
  for (const t of L.ticks) {
    axis.append(s('line', { class: 'grid', x1: t.x, x2: t.x, y1: L.top - 8, y2: L.height }));
    const anchor = t.x < L.left + 30 ? 'start' : t.x > L.right - 30 ? 'end' : 'middle';
    axis.append(s('text', { class: 'tick-label', x: t.x, y: 34, 'text-anchor': anchor }, t.label));
  }
  svg.append(axis);

  // Upcoming events: a marker on the top band and a dotted line through the lane.
  for (const u of L.upcoming) {
    if (u.x == null) continue;
    const lane = L.lanes[u.laneIndex];
    const g = s('g', { class: `upcoming upcoming-${u.event}` });
    g.append(s('title', {}, `${u.label} of ${u.alg}${u.kid ? ` (key ${u.kid})` : ''}: ${TL.formatUtc(u.atMs)} (${TL.formatRelative(u.atMs, now)})`));
    if (lane) g.append(s('line', { class: 'upcoming-line', x1: u.x, x2: u.x, y1: lane.y, y2: lane.y + lane.height }));
    g.append(s('path', { class: 'upcoming-marker', d: `M${u.x - 5},12 L${u.x + 5},12 L${u.x},20 Z` }));
    svg.append(g);
  }

  for (const lane of L.lanes) for (const bar of lane.bars) if (bar.visible) svg.append(buildBar(bar, L, now));

  {
    // Always drawn (hidden when out of view) so tick() can move it in place.
    const x = L.nowX ?? -10;
    const hidden = L.nowX == null ? 'hidden' : null;
    svg.append(
      s('line', { class: 'now-line', x1: x, x2: x, y1: 14, y2: L.height, visibility: hidden }),
      s('text', { class: 'now-label', x, y: 10, 'text-anchor': 'middle', visibility: hidden }, 'now'),
    );
  }
  return svg;
}

function buildBar(bar, L, now) {
  const key = bar.key;
  const attrs = {
    class: `key-bar state-${bar.state}${bar.kid === state.selected ? ' selected' : ''}`,
    tabindex: 0,
    role: 'button',
    'data-kid': bar.kid,
    'data-state': bar.state,
    'data-focus-key': `bar:${bar.kid}`,
    'aria-label': TL.describeKey(bar, now),
    'aria-pressed': bar.kid === state.selected ? 'true' : 'false',
  };
  // The instants as ms numbers, for tests and for anyone inspecting the page.
  const dataInstants = { 'data-published': 'published_at', 'data-activated': 'activated_at', 'data-deactivated': 'deactivated_at', 'data-retire-at': 'retire_at', 'data-ended': 'ended_at' };
  for (const [attr, field] of Object.entries(dataInstants)) {
    const ms = TL.parseTime(key[field]);
    if (ms != null) attrs[attr] = ms;
  }
  const g = s('g', attrs);
  const xs = bar.segments.map((sg) => [sg.x, sg.x + sg.width]).flat();
  const x0 = xs.length ? Math.min(...xs) : (bar.markers[0]?.x ?? L.left);
  const x1 = xs.length ? Math.max(...xs) : x0;

  g.append(s('rect', { class: 'focus-ring', x: x0 - 3, y: bar.y - 1, width: x1 - x0 + 6, height: bar.barY + bar.barHeight - bar.y + 4, rx: 3 }));

  for (const w of bar.windows) {
    const name = w.kind === 'publish_ahead' ? 'Publish-ahead window' : w.kind === 'retention' ? 'Retention window' : w.kind;
    g.append(s('rect', { class: `win win-${w.kind}${w.projected ? ' projected' : ''}`, x: w.x, y: bar.barY - 3, width: Math.max(1, w.width), height: bar.barHeight + 6 },
      s('title', {}, `${name}${w.projected ? ' (projected)' : ''}: ${TL.formatUtc(w.from)} to ${TL.formatUtc(w.to)} (${TL.formatDuration(w.to - w.from)})`)));
  }

  for (const sg of bar.segments) {
    const cls = `seg seg-${sg.state}${sg.projected ? ' projected' : ''}${sg.open ? ' open' : ''}`;
    // Hatch and stripes are patterns (index.html); the fill attribute is a
    // presentation attribute, not a style, so the CSP allows it.
    const fill = sg.state === 'next' ? 'url(#pat-next)' : sg.state === 'retiring' ? 'url(#pat-retiring)' : null;
    const end = sg.open ? 'open-ended' : TL.formatUtc(sg.to);
    g.append(s('rect', { class: cls, x: sg.x, y: bar.barY, width: Math.max(1, sg.width), height: bar.barHeight, fill },
      s('title', {}, `${sg.state}${sg.projected ? ' (projected)' : ''}: ${TL.formatUtc(sg.from)} to ${end}`)));
  }

  const midY = bar.barY + bar.barHeight / 2;
  for (const m of bar.markers) {
    const shape = (MARKER_SHAPES[m.name] ?? MARKER_SHAPES.published)();
    g.append(s('g', { class: `marker marker-${m.name}${m.future ? ' future' : ''}`, transform: `translate(${m.x},${midY})` },
      s('title', {}, `${m.label}: ${TL.formatUtc(m.at)} (${TL.formatRelative(m.at, now)})`), shape));
    // Revocation is spelled out beside its ✕, not left to the shape alone.
    if (m.name === 'revoked' && m.x + 60 < L.right) g.append(s('text', { class: 'revoked-text', x: m.x + 8, y: midY + 4 }, 'revoked'));
  }

  // Label above the bar, only where it fits (narrow bars are still in the table and aria-label).
  const stateText = bar.state === 'revoked' ? '✕ revoked' : bar.state;
  const room = x1 - x0;
  const label = [`${bar.kid} · ${stateText}`, String(bar.kid)].find((t) => t.length * 6.3 <= room);
  if (label) g.append(s('text', { class: 'bar-label', x: Math.max(x0, L.left) + 2, y: bar.labelY }, label));

  g.addEventListener('click', () => selectKey(bar.kid));
  g.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      selectKey(bar.kid);
    }
  });
  return g;
}

/** Every second: move "now", and re-render only when it moved by a pixel or more. */
function tick() {
  const now = serverNow();
  if (state.timeline && state.view && state.rendered) {
    const moved = (now - state.rendered.at) * state.rendered.k;
    const nowVisible = now >= state.view.from && now <= state.view.to;
    // While a key bar has keyboard focus, rebuilding the SVG every second would
    // make screen readers announce it again and again: only move "now" then.
    const barFocused = !!document.activeElement?.closest?.('#timeline .key-bar');
    if (barFocused) moveNowLine(now);
    else if (moved >= 1 && (state.follow || nowVisible)) renderTimeline();
    // An upcoming event has passed without a stream event: fetch once for it.
    const due = (state.timeline.upcoming ?? []).map((u) => TL.parseTime(u.at)).filter((t) => t != null && t + 1500 < now && t > state.refreshedUpTo);
    if (due.length) {
      state.refreshedUpTo = Math.max(...due);
      scheduleRefresh(0);
    }
  }
  for (const el of document.querySelectorAll('[data-rel-at]')) {
    el.textContent = TL.formatRelative(Number(el.getAttribute('data-rel-at')), now);
  }
}

/** Move the "now" line and label without re-rendering (the view stays put meanwhile). */
function moveNowLine(now) {
  const r = state.rendered;
  const v = state.view;
  const x = r.left + ((now - v.from) * (r.right - r.left)) / (v.to - v.from);
  const inView = now >= v.from && now <= v.to;
  for (const el of document.querySelectorAll('#timeline .now-line, #timeline .now-label')) {
    if (el.tagName === 'line') { el.setAttribute('x1', x); el.setAttribute('x2', x); } else el.setAttribute('x', x);
    if (inView) el.removeAttribute('visibility'); else el.setAttribute('visibility', 'hidden');
  }
}

// ---------------------------------------------------------------------------
// Zoom and pan

function buildZoomButtons() {
  const holder = $('zoom-levels');
  for (const level of TL.zoomLevels) {
    const b = h('button', { type: 'button', class: 'zoom-level', 'data-zoom': level.id, 'aria-pressed': 'false' }, level.label);
    b.addEventListener('click', () => applyZoom(level));
    holder.append(b);
  }
}

function updateZoomButtons() {
  const cur = state.view && TL.currentLevel(state.view);
  for (const b of document.querySelectorAll('[data-zoom]')) b.setAttribute('aria-pressed', String(cur?.id === b.getAttribute('data-zoom')));
  if (state.view) {
    const span = state.view.to - state.view.from;
    $('zoom-in').disabled = span <= TL.MIN_SPAN;
    $('zoom-out').disabled = span >= TL.MAX_SPAN;
  }
}

function setView(view, follow) {
  state.view = view;
  state.follow = follow;
  renderTimeline();
}

/** Zoom to a level; following "now" stays following, else "now" (if shown) or the centre stays put. */
function applyZoom(level) {
  if (!state.view) return;
  const now = serverNow();
  if (state.follow) return setView(TL.centreOn(now, level.ms), true);
  const anchor = now >= state.view.from && now <= state.view.to ? now : undefined;
  setView(TL.zoom(state.view, level, anchor), false);
}

function zoomStep(dir) {
  if (state.view) applyZoom(TL.stepLevel(state.view, dir));
}

function onTimelineKey(e) {
  if (!state.view || e.altKey || e.ctrlKey || e.metaKey) return;
  if (e.key === '+' || e.key === '=') zoomStep(-1);
  else if (e.key === '-' || e.key === '_' || e.key === '−') zoomStep(1);
  else if (e.key === 'ArrowLeft' || e.key === 'ArrowRight') {
    const f = (e.shiftKey ? 0.5 : 0.1) * (e.key === 'ArrowLeft' ? -1 : 1);
    setView(TL.pan(state.view, f), false);
    if (document.activeElement?.closest?.('#timeline') == null) $('timeline').focus();
  } else return;
  e.preventDefault();
}

// ---------------------------------------------------------------------------
// Keys table, detail panel, upcoming, lane actions

function allKeys() {
  return (state.timeline?.lanes ?? []).flatMap((lane) =>
    [...(lane.keys ?? [])]
      .map((k) => ({ ...k, alg: k.alg ?? lane.alg }))
      .sort((a, b) => (TL.parseTime(b.published_at) ?? 0) - (TL.parseTime(a.published_at) ?? 0)));
}

function findKey(kid) {
  return allKeys().find((k) => k.kid === kid) ?? null;
}

function endCell(k) {
  const ended = TL.parseTime(k.ended_at);
  if (k.state === 'revoked') return ['revoked ', when(ended, { rel: false })];
  if (k.state === 'retired') return ['retired ', when(ended ?? TL.parseTime(k.retire_at), { rel: false })];
  const r = TL.parseTime(k.retire_at);
  if (r != null) return ['retires ', when(r, { rel: false })];
  const p = TL.parseTime(k.projected_retire_at);
  if (p != null) return ['projected ', when(p, { rel: false })];
  return h('span', { class: 'muted' }, '—');
}

function renderKeysTable() {
  const tbody = $('keys-table').tBodies[0];
  const rows = allKeys().map((k) => {
    const sel = k.kid === state.selected;
    const cell = (field) => h('td', {}, when(TL.parseTime(k[field]), { rel: false }));
    const tr = h('tr', { 'data-kid': k.kid, class: sel ? 'selected' : null, 'aria-current': sel ? 'true' : null },
      h('th', { scope: 'row' }, h('button', { type: 'button', class: 'linklike', 'data-focus-key': `row:${k.kid}`, 'aria-label': `Details of key ${k.kid}` }, k.kid)),
      h('td', {}, k.alg),
      h('td', {}, h('span', { class: `state-tag state-${k.state}` }, k.state)),
      cell('published_at'),
      cell('activated_at'),
      cell('deactivated_at'),
      h('td', {}, endCell(k)));
    tr.querySelector('button').addEventListener('click', () => selectKey(k.kid));
    return tr;
  });
  keepFocus(() => tbody.replaceChildren(...rows));
  $('keys-empty').hidden = rows.length > 0;
}

function selectKey(kid, { focus = true } = {}) {
  state.selected = kid;
  renderDetail();
  renderKeysTable();
  // Mark the bar without a full re-render, so focus stays where it is.
  for (const b of document.querySelectorAll('#timeline .key-bar')) {
    const on = b.getAttribute('data-kid') === kid;
    b.classList.toggle('selected', on);
    b.setAttribute('aria-pressed', String(on));
  }
  if (focus) $('key-detail-title').focus();
}

function renderDetail() {
  const box = $('key-detail');
  const kid = state.selected;
  $('key-detail-title').textContent = kid ? `Key ${kid}` : 'Key detail';
  if (!kid) return box.replaceChildren(h('p', { class: 'muted' }, 'Select a key in the timeline or the table.'));
  const k = findKey(kid);
  if (!k) return box.replaceChildren(h('p', {}, `Key ${kid} is no longer in the timeline.`));
  const now = serverNow();
  const dl = h('dl', { class: 'facts' });
  const row = (dt, ...dd) => dl.append(h('dt', {}, dt), h('dd', {}, ...dd));
  row('Kid', h('code', {}, k.kid));
  row('Algorithm', k.alg);
  row('State', h('span', { class: `state-tag state-${k.state}` }, k.state));
  if (k.custody) row('Custody', k.custody);
  if (k.early_activation) row('Early activation', k.early_activation);
  for (const i of TL.keyInstants(k, now)) row(i.label, when(i.at));
  const windows = (k.windows ?? []).map((w) => {
    const from = TL.parseTime(w.from);
    const to = TL.parseTime(w.to);
    const name = w.kind === 'publish_ahead' ? 'Publish-ahead' : w.kind === 'retention' ? 'Retention' : w.kind;
    return h('li', {}, `${name}${w.projected ? ' (projected)' : ''}: `, when(from, { rel: false }), ' to ', when(to, { rel: false }), ` — ${TL.formatDuration(to - from)}`);
  });
  const parts = [dl, h('h3', {}, 'Windows'), windows.length ? h('ul', { class: 'plain' }, windows) : h('p', { class: 'muted' }, 'None.')];
  if (!TL.isEnded(k)) {
    if (k.revoke?.summary) parts.push(h('h3', {}, 'If revoked'), h('p', {}, k.revoke.summary));
    if (!isViewer()) {
      const b = h('button', { type: 'button', id: 'revoke-open', class: 'danger', 'data-focus-key': 'revoke-open' }, 'Revoke…');
      b.addEventListener('click', () => openRevoke(k.kid));
      parts.push(h('p', {}, b));
    }
  }
  keepFocus(() => box.replaceChildren(...parts));
}

function renderUpcoming() {
  const now = serverNow();
  const items = (state.timeline?.upcoming ?? [])
    .map((u) => ({ ...u, atMs: TL.parseTime(u.at) }))
    .filter((u) => u.atMs != null)
    .sort((a, b) => a.atMs - b.atMs)
    .map((u) => h('li', { 'data-event': u.event, 'data-alg': u.alg },
      h('strong', { 'data-rel-at': u.atMs }, TL.formatRelative(u.atMs, now)),
      ` — ${u.alg} ${TL.UPCOMING_LABELS[u.event] ?? u.event}${u.kid ? `, key ${u.kid}` : ''} at `,
      when(u.atMs, { rel: false })));
  $('upcoming').replaceChildren(...(items.length ? items : [h('li', { class: 'muted' }, 'Nothing scheduled.')]));
}

function renderLaneActions() {
  const holder = $('rotate-lanes');
  const lanes = (state.timeline?.lanes ?? []).filter((l) => l.configured !== false);
  keepFocus(() => holder.replaceChildren(...lanes.map((lane) => {
    const r = lane.rotate ?? {};
    const es = TL.parseTime(r.earliest_safe);
    const b = h('button', { type: 'button', 'data-rotate-alg': lane.alg, 'data-focus-key': `rotate:${lane.alg}`, 'data-operator-only': '', hidden: isViewer() }, `Rotate ${lane.alg}…`);
    b.addEventListener('click', () => openRotate(lane.alg));
    return h('div', { class: 'lane-action', 'data-lane': lane.alg },
      h('h3', {}, lane.alg),
      r.summary ? h('p', {}, r.summary) : null,
      h('p', {}, safeBadge(r.safe_now), es != null ? [' · earliest safe: ', when(es)] : null),
      r.refusal ? h('p', { class: 'refusal' }, `Refused now: ${r.refusal}`) : null,
      b);
  })));
}

function safeBadge(safe) {
  return safe
    ? h('span', { class: 'badge status-ok' }, '✓ safe to rotate now')
    : h('span', { class: 'badge status-warning' }, '▲ not safe to rotate now');
}

// ---------------------------------------------------------------------------
// Dialogs and actions

function openDialog(dialog) {
  const opener = document.activeElement;
  dialog.addEventListener('close', () => {
    state.pending = null;
    // Give focus back to the control that opened the dialog (or its re-rendered twin).
    const key = opener?.getAttribute?.('data-focus-key');
    const target = opener?.isConnected ? opener : key ? document.querySelector(`[data-focus-key="${CSS.escape(key)}"]`) : opener?.id ? $(opener.id) : null;
    target?.focus();
  }, { once: true });
  dialog.showModal();
  // Fresh summaries for the decision; the dialog refills when they arrive.
  refreshTimeline().catch(() => {});
}

function openRotate(alg) {
  state.pending = { kind: 'rotate', alg };
  $('rotate-force').checked = false;
  fillRotateDialog();
  openDialog($('rotate-dialog'));
}

function fillRotateDialog() {
  const alg = state.pending?.alg ?? null;
  // Rotate all: the configured algorithms, as the daemon rotates them; a
  // lane left from an algorithm no longer configured only retires.
  const lanes = (state.timeline?.lanes ?? []).filter((l) => (alg ? l.alg === alg : l.configured !== false));
  $('rotate-title').textContent = alg ? `Rotate ${alg}` : 'Rotate all algorithms';
  const body = lanes.map((lane) => {
    const r = lane.rotate ?? {};
    const dl = h('dl', { class: 'facts' });
    const row = (dt, ...dd) => dl.append(h('dt', {}, dt), h('dd', {}, ...dd));
    row('Active key', r.active ? h('code', {}, r.active) : '—');
    row('Next key (becomes active)', r.next ? h('code', {}, r.next) : '—');
    row('Safe now', safeBadge(r.safe_now));
    row('Earliest safe rotation', when(TL.parseTime(r.earliest_safe)));
    if (r.refusal) row('Refused now because', r.refusal);
    return h('div', { class: 'dialog-lane' }, alg ? null : h('h3', {}, lane.alg), r.summary ? h('p', {}, r.summary) : null, dl);
  });
  $('rotate-summary').replaceChildren(...(body.length ? body : [h('p', {}, 'No algorithm to rotate.')]));
  const unsafe = lanes.filter((l) => !l.rotate?.safe_now);
  $('rotate-force-box').hidden = unsafe.length === 0;
  if (!unsafe.length) $('rotate-force').checked = false;
  $('rotate-force-breaks').replaceChildren(...unsafe.filter((l) => l.rotate?.force_breaks).map((l) => {
    const fb = l.rotate.force_breaks;
    return h('p', {}, alg ? '' : `${l.alg}: `, fb.summary ?? '', TL.parseTime(fb.until) != null ? [' (until ', when(TL.parseTime(fb.until)), ')'] : null);
  }));
  $('rotate-confirm').disabled = isViewer();
}

async function confirmRotate() {
  if (isViewer() || state.pending?.kind !== 'rotate') return;
  const alg = state.pending.alg;
  const force = !$('rotate-force-box').hidden && $('rotate-force').checked;
  const after = state.timeline?.audit_seq ?? 0;
  $('rotate-dialog').close();
  setResult('pending', alg ? `Rotating ${alg}…` : 'Rotating all algorithms…');
  try {
    const res = await api('POST', 'rotate', { body: alg ? { alg, force } : { force }, csrf: true });
    const done = (res?.rotated ?? []).map((r) => `${r.alg}: ${r.previous ?? '—'} → ${r.active ?? '—'}`);
    setResult('ok', done.length ? `Rotated ${done.join('; ')}${force ? ' (forced)' : ''}.` : 'Nothing was rotated.');
  } catch (e) {
    if (e.status === 401) return;
    if (e.code === 'too_early') {
      const t = TL.parseTime(e.body?.earliest_safe_rotation);
      const algs = (e.body?.algs ?? []).join(', ');
      setResult('error', `Refused, too early${algs ? ` for ${algs}` : ''}: ${e.message} Earliest safe rotation: `, when(t), '.');
    } else setResult('error', `Rotation failed: ${e.message}${e.code ? ` (${e.code})` : ''}`);
  }
  await afterAction(after);
}

function openRevoke(kid) {
  state.pending = { kind: 'revoke', kid };
  $('revoke-confirm-kid').value = '';
  fillRevokeDialog();
  openDialog($('revoke-dialog'));
  $('revoke-confirm-kid').focus();
}

function fillRevokeDialog() {
  const kid = state.pending?.kid;
  const k = kid && findKey(kid);
  $('revoke-title').textContent = `Revoke key ${kid}`;
  $('revoke-kid').textContent = kid ?? '';
  const rv = k?.revoke;
  const parts = [];
  if (!k) parts.push(h('p', {}, 'This key is no longer in the timeline.'));
  else if (!rv) parts.push(h('p', {}, 'This key has ended; there is nothing to revoke.'));
  else {
    if (rv.summary) parts.push(h('p', {}, rv.summary));
    const dl = h('dl', { class: 'facts' });
    const row = (dt, ...dd) => dl.append(h('dt', {}, dt), h('dd', {}, ...dd));
    const from = TL.parseTime(rv.tokens_signed_from);
    const until = TL.parseTime(rv.tokens_signed_until);
    row('Tokens that stop verifying', from != null || until != null
      ? ['signed ', from != null ? ['from ', when(from, { rel: false }), ' '] : '', until != null ? ['until ', when(until, { rel: false })] : 'until now']
      : 'none were signed with it');
    if (rv.tokens_valid_until) row('Those tokens would otherwise be valid until', when(TL.parseTime(rv.tokens_valid_until)));
    row('Verifiers stop accepting it by', when(TL.parseTime(rv.verifiers_stop_by)), ' (their JWK Set cache)');
    row('Successor', rv.successor ? [h('code', {}, rv.successor), rv.successor_early ? ' — activates early' : ' — no early activation'] : 'none');
    if (rv.signers_switch_by) row('Signers switch to it by', when(TL.parseTime(rv.signers_switch_by)));
    parts.push(dl);
  }
  $('revoke-summary').replaceChildren(...parts);
  updateRevokeConfirm();
}

function updateRevokeConfirm() {
  const kid = state.pending?.kid;
  $('revoke-confirm').disabled = isViewer() || !kid || $('revoke-confirm-kid').value !== kid;
}

async function confirmRevoke() {
  const kid = state.pending?.kid;
  if (isViewer() || state.pending?.kind !== 'revoke' || $('revoke-confirm-kid').value !== kid) return;
  const after = state.timeline?.audit_seq ?? 0;
  $('revoke-dialog').close();
  setResult('pending', `Revoking ${kid}…`);
  try {
    const res = await api('POST', `keys/${encodeURIComponent(kid)}/revoke`, { csrf: true });
    const extra = res?.summary ?? res?.revoke?.summary ?? '';
    const succ = res?.successor ? ` Successor: ${res.successor}.` : '';
    setResult('ok', `Revoked ${kid}.${succ}${extra ? ` ${extra}` : ''}`);
  } catch (e) {
    if (e.status === 401) return;
    setResult('error', `Revocation failed: ${e.message}${e.code ? ` (${e.code})` : ''}`);
  }
  await afterAction(after);
}

function setResult(kind, ...content) {
  const symbol = { ok: '✓ ', error: '✕ ', pending: '… ' }[kind] ?? '';
  const box = $('action-result');
  box.className = `result result-${kind}`;
  box.replaceChildren(symbol, ...content);
}

/** Show this client's audit records written since the action, then refresh. */
async function afterAction(after) {
  try {
    const res = await api('GET', `audit?after=${encodeURIComponent(after)}&limit=100`);
    const mine = (res?.records ?? []).filter((r) => r.actor?.name === state.client?.name).sort((a, b) => a.seq - b.seq);
    $('action-audit-list').replaceChildren(...mine.map(auditItem));
    $('action-audit-empty').hidden = mine.length > 0;
    $('action-audit').hidden = false;
  } catch (e) {
    if (e.status === 401) return;
    $('action-audit-list').replaceChildren();
    $('action-audit-empty').hidden = false;
    $('action-audit-empty').textContent = `The audit log could not be read: ${e.message}`;
    $('action-audit').hidden = false;
  }
  await refreshTimeline().catch(() => {});
}

/** One audit record as a list item: seq, type, kid, actor, time, result. */
function auditItem(r) {
  const ev = r.event ?? {};
  const bits = [];
  if (ev.kid) bits.push(` ${ev.kid}`);
  if (ev.alg) bits.push(` (${ev.alg})`);
  if (ev.from || ev.to) bits.push(` ${ev.from ?? '?'} → ${ev.to ?? '?'}`);
  if (ev.trigger) bits.push(`, trigger ${ev.trigger}`);
  if (ev.early_activation) bits.push(`, early: ${ev.early_activation}`);
  if (ev.command) bits.push(`, command ${ev.command}`);
  if (ev.reason) bits.push(`: ${ev.reason}`);
  const actor = r.actor ? `${r.actor.name} (${r.actor.role})` : 'jwksd';
  return h('li', { 'data-seq': r.seq, 'data-type': ev.type ?? '' },
    h('span', { class: 'seq' }, `#${r.seq}`), ' ',
    when(r.at_ms, { rel: false }), ' ',
    h('strong', {}, ev.type ?? 'event'), bits.join(''),
    ` — by ${actor}, `,
    h('span', { class: r.result === 'ok' ? 'result-ok-text' : 'result-refused-text' }, r.result === 'ok' ? '✓ ok' : `✕ ${r.result ?? '?'}`));
}

// ---------------------------------------------------------------------------
// Events: the SSE stream and the "Recent events" list

function openEvents() {
  closeEvents();
  const es = new EventSource('api/events');
  state.es = es;
  const onEvent = (ev) => {
    let rec;
    try { rec = JSON.parse(ev.data); } catch { return; }
    addEvent(rec);
    scheduleRefresh();
  };
  for (const type of EVENT_TYPES) es.addEventListener(type, onEvent);
  es.addEventListener('open', () => setStream('✓ live'));
  es.addEventListener('error', async () => {
    if (state.es !== es) return;
    if (es.readyState !== EventSource.CLOSED) return setStream('… reconnecting');
    // The browser gave up (e.g. a 401 on reconnect): is the session still there?
    setStream('✕ disconnected');
    try {
      const sess = await api('GET', 'session');
      if (sess?.csrf) state.csrf = sess.csrf;
      state.esRetry = setTimeout(openEvents, 3000);
    } catch (e) {
      if (e.status !== 401) state.esRetry = setTimeout(openEvents, 10_000);
    }
  });
}

function closeEvents() {
  state.es?.close();
  state.es = null;
  setStream('');
}

function setStream(text) {
  $('stream-status').textContent = text ? `Live updates: ${text}` : '';
}

/** Insert a record by seq (newest first), once, keeping the list at 50. */
function addEvent(rec) {
  if (rec?.seq == null || state.seen.has(rec.seq)) return;
  state.seen.add(rec.seq);
  // Bounded: only the newest seqs can come again (a resumed stream).
  if (state.seen.size > 4 * MAX_EVENTS) state.seen.delete(state.seen.values().next().value);
  const list = $('events');
  list.querySelector('.placeholder')?.remove();
  const li = auditItem(rec);
  const later = [...list.children].find((c) => Number(c.getAttribute('data-seq')) < rec.seq);
  list.insertBefore(li, later ?? null);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

/** Fill "Recent events" with the last records before the stream's first. */
async function backfillEvents() {
  const head = state.timeline?.audit_seq;
  if (head == null) return;
  try {
    const res = await api('GET', `audit?after=${Math.max(0, head - MAX_EVENTS)}&limit=${MAX_EVENTS}`);
    for (const r of res?.records ?? []) addEvent(r);
  } catch {
    // Not essential: the stream fills the list from now on.
  }
}

// ---------------------------------------------------------------------------
// Health and metrics

async function pollHealth() {
  const [health, metrics] = await Promise.allSettled([api('GET', 'health'), fetchMetrics()]);
  if (!state.client) return;
  renderHealth(health);
  renderMetrics(metrics);
}

async function fetchMetrics() {
  // Absolute path: /metrics is outside the console and needs no session.
  const res = await fetch('/metrics', { credentials: 'same-origin', cache: 'no-store' });
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return res.text();
}

function statusBadge(status, text = TL.STATUS_TEXT[status]) {
  return h('span', { class: `badge status-${status}` }, text);
}

function renderHealth(result) {
  const ready = $('ready-status');
  const facts = $('health-facts');
  if (result.status !== 'fulfilled') {
    if (result.reason?.status === 401) return;
    ready.replaceChildren(statusBadge('warning', '▲ unknown'), ` Health could not be read: ${result.reason?.message ?? 'error'}`);
    return;
  }
  const hl = result.value ?? {};
  const reasons = hl.reasons ?? [];
  ready.replaceChildren(
    hl.ready ? statusBadge('ok', '✓ ready') : statusBadge('firing', '✕ not ready'),
    hl.ready ? ' Serving and rotating normally.' : ` ${reasons.length ? reasons.join('; ') : 'No reason given.'}`,
  );
  if (hl.ready && reasons.length) ready.append(` Notes: ${reasons.join('; ')}`);
  const rows = [];
  const row = (dt, ...dd) => rows.push(h('dt', {}, dt), h('dd', {}, ...dd));
  row('Store reachable', hl.store_reachable ? statusBadge('ok', '✓ yes') : statusBadge('firing', '✕ no'));
  row('Lifecycle', hl.lifecycle_failing ? statusBadge('firing', '✕ failing') : statusBadge('ok', '✓ working'));
  row('Replica', hl.replica ?? '—');
  if (hl.shared_store) {
    row('Role', hl.leader ? 'leader' : 'follower');
    row('Lease holder', hl.lease_holder ?? statusBadge('warning', '▲ none'));
    if (hl.lease_error) row('Lease', statusBadge('warning', '▲ unreadable'), ` ${hl.lease_error}`);
  }
  if (hl.token_available != null) row('PKCS#11 token', hl.token_available ? statusBadge('ok', '✓ available') : statusBadge('firing', '✕ unavailable'));
  if (hl.synced_seconds_ago != null) row('Last sync', when(Date.now() + state.offset - hl.synced_seconds_ago * 1000));
  facts.replaceChildren(...rows);
}

function renderMetrics(result) {
  const tbody = $('metrics-table').tBodies[0];
  const note = $('metrics-note');
  const at = Date.now();
  let cur = null;
  if (result.status === 'fulfilled') {
    cur = TL.parseMetrics(result.value);
    state.history = TL.recordSample(state.history, { at, metrics: cur }, METRICS_WINDOW_MS);
    note.textContent = '';
  } else {
    note.textContent = `/metrics could not be read (${result.reason?.message ?? 'error'}); the watched metrics show as not reported.`;
  }
  const base = TL.baselineSample(state.history, at, METRICS_WINDOW_MS);
  const observed = base ? TL.formatDuration(at - base.at) : null;
  const algorithms = state.timeline?.lanes?.map((l) => l.alg);
  const results = TL.evaluateWatches(base?.metrics ?? null, cur, TL.WATCHES, { algorithms });
  const fmt = (v) => (Number.isInteger(v) ? String(v) : Number(v).toPrecision(4).replace(/\.?0+$/, ''));
  tbody.replaceChildren(...results.map((r) => {
    const w = r.watch;
    let value;
    if (r.status === 'absent') value = h('span', { class: 'muted' }, 'not reported');
    else if (w.kind === 'counter') {
      value = r.baseline
        ? `+${fmt(r.value)} in the last ${observed} (total ${fmt(r.total)})`
        : `total ${fmt(r.total)} (increase: collecting a second sample)`;
    } else if (w.by) {
      value = h('ul', { class: 'plain' }, r.groups.map((g) => h('li', {}, `${g.group || '(no label)'}: ${fmt(g.value)} `, w.condition ? statusBadge(g.status) : null)));
    } else value = fmt(r.value);
    return h('tr', { 'data-watch': w.id, 'data-status': r.status },
      h('th', { scope: 'row' }, h('code', {}, TL.watchSelector(w)), h('br'), h('span', { class: 'muted' }, w.text)),
      h('td', {}, value),
      h('td', {}, statusBadge(r.status)),
      h('td', {}, w.alert));
  }));
  // At a glance: the worst news in the summary; the table opens by itself
  // when something fires.
  const count = (st) => results.filter((r) => r.status === st).length;
  const firing = count('firing');
  const warning = count('warning');
  const parts = [];
  if (firing) parts.push(`${TL.STATUS_TEXT.firing.split(' ')[0]} ${firing} firing`);
  if (warning) parts.push(`${TL.STATUS_TEXT.warning.split(' ')[0]} ${warning} warning`);
  $('metrics-summary').textContent = parts.length ? parts.join(', ') : `${TL.STATUS_TEXT.ok.split(' ')[0]} none firing`;
  $('metrics-summary').dataset.status = firing ? 'firing' : warning ? 'warning' : 'ok';
  if (firing && !state.metricsOpened) {
    $('metrics-details').open = true;
    state.metricsOpened = true;
  }
}

// ---------------------------------------------------------------------------
// Boot

// The operator's own input keeps the session alive (at most one request a
// minute); the page's refreshes alone do not.
let lastTouch = 0;
function touch() {
  if (!state.csrf || Date.now() - lastTouch < 60_000) return;
  lastTouch = Date.now();
  api('GET', 'session', { background: false, allow401: true }).catch((e) => {
    if (e.status === 401) sessionEnded(SESSION_ENDED);
  });
}

async function boot() {
  buildZoomButtons();
  for (const ev of ['pointerdown', 'keydown']) document.addEventListener(ev, touch, { passive: true });
  $('signin-form').addEventListener('submit', onSignin);
  $('signout').addEventListener('click', onSignout);
  $('zoom-in').addEventListener('click', () => zoomStep(-1));
  $('zoom-out').addEventListener('click', () => zoomStep(1));
  $('zoom-now').addEventListener('click', () => {
    if (state.view) setView(TL.centreOn(serverNow(), state.view.to - state.view.from), true);
  });
  $('timeline').addEventListener('keydown', onTimelineKey);
  $('rotate-all').addEventListener('click', () => openRotate(null));
  $('rotate-confirm').addEventListener('click', confirmRotate);
  $('rotate-cancel').addEventListener('click', () => $('rotate-dialog').close());
  $('revoke-confirm').addEventListener('click', confirmRevoke);
  $('revoke-cancel').addEventListener('click', () => $('revoke-dialog').close());
  $('revoke-confirm-kid').addEventListener('input', updateRevokeConfirm);
  $('revoke-confirm-kid').addEventListener('keydown', (e) => {
    if (e.key === 'Enter') { e.preventDefault(); if (!$('revoke-confirm').disabled) confirmRevoke(); }
  });
  // Re-lay the timeline out when its container changes width (window, zoom, sidebar).
  let lastWidth = 0;
  new ResizeObserver(() => {
    const w = $('timeline').clientWidth;
    if (Math.abs(w - lastWidth) >= 1) { lastWidth = w; renderTimeline(); }
  }).observe($('timeline'));

  try {
    const session = await api('GET', 'session', { allow401: true, background: false });
    startConsole(session);
  } catch (e) {
    showSignin(e.code === 'session_expired' || e.code === 'session_ended' ? SESSION_ENDED : e.status && e.status !== 401 ? `The console could not reach jwksd: ${e.message}` : '');
  }
}

boot();
