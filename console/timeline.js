// timeline.js — pure layout and data helpers for the jwksd console.
//
// Nothing in here touches the DOM, the network or the clock: every input
// (the timeline JSON, the view window, the width, "now") is passed in, so
// the whole module runs under `node --test` and gives the same answer for
// the same input.

export const SECOND = 1000;
export const MINUTE = 60 * SECOND;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;
export const WEEK = 7 * DAY;

/** Narrowest and widest view. One minute, because test daemons rotate every few seconds. */
export const MIN_SPAN = MINUTE;
export const MAX_SPAN = 365 * DAY;

/** The zoom buttons, narrowest first. Months are approximate (30/91/182 days). */
export const zoomLevels = Object.freeze([
  { id: '1m', label: '1 min', ms: MINUTE },
  { id: '10m', label: '10 min', ms: 10 * MINUTE },
  { id: '1h', label: '1 h', ms: HOUR },
  { id: '6h', label: '6 h', ms: 6 * HOUR },
  { id: '1d', label: '1 d', ms: DAY },
  { id: '1w', label: '1 w', ms: WEEK },
  { id: '1mo', label: '1 mo', ms: 30 * DAY },
  { id: '3mo', label: '3 mo', ms: 91 * DAY },
  { id: '6mo', label: '6 mo', ms: 182 * DAY },
]);

// ---------------------------------------------------------------------------
// Time parsing and formatting

const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/**
 * RFC 3339 string -> epoch milliseconds, or null when absent or malformed.
 * Written out rather than Date.parse so that nanosecond fractions and
 * offsets parse the same in every engine. Fractions are truncated to ms.
 */
export function parseTime(s) {
  if (typeof s === 'number') return Number.isFinite(s) ? s : null;
  if (typeof s !== 'string') return null;
  const m = RFC3339.exec(s.trim());
  if (!m) return null;
  const [, y, mo, d, h, mi, se, frac, z, sign, oh, om] = m;
  if (+mo < 1 || +mo > 12 || +d < 1 || +d > 31 || +h > 23 || +mi > 59 || +se > 60) return null;
  let ms = Date.UTC(+y, +mo - 1, +d, +h, +mi, +se);
  if (frac) ms += Number(frac.slice(0, 3).padEnd(3, '0'));
  if (!z) {
    const off = (+oh * 60 + +om) * MINUTE;
    ms += sign === '+' ? -off : off;
  }
  return ms;
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** 2026-12-02 17:00:03Z — the form every time on the page is shown in. */
export function formatUtc(ms) {
  if (ms == null || !Number.isFinite(ms)) return '—';
  const d = new Date(ms);
  return (
    `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}Z`
  );
}

/** A duration in words, the two largest units: "2 h 30 min", "8 s", "3 d". */
export function formatDuration(ms) {
  if (ms == null || !Number.isFinite(ms)) return '—';
  let rest = Math.round(Math.abs(ms) / SECOND);
  if (rest === 0) return ms === 0 ? '0 s' : `${Math.abs(ms)} ms`;
  const units = [['d', 86400], ['h', 3600], ['min', 60], ['s', 1]];
  const parts = [];
  for (const [name, size] of units) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)} ${name}`);
      rest %= size;
    }
    if (parts.length === 2) break;
    if (parts.length === 1 && rest === 0) break;
  }
  return parts.join(' ');
}

/** "in 5 s", "3 min ago", "now" — one unit, rounded, for glanceable text. */
export function formatRelative(at, now) {
  if (at == null || now == null || !Number.isFinite(at) || !Number.isFinite(now)) return '';
  const d = at - now;
  const a = Math.abs(d);
  let text;
  if (a < 500) return 'now';
  if (a < MINUTE) text = `${Math.round(a / SECOND)} s`;
  else if (a < HOUR) text = `${Math.round(a / MINUTE)} min`;
  else if (a < 2 * DAY) text = `${Math.round(a / HOUR)} h`;
  else text = `${Math.round(a / DAY)} d`;
  return d > 0 ? `in ${text}` : `${text} ago`;
}

/** "3s", "1h30m", "every 2 d" -> ms; null for anything else (a cron line). */
export function parseDuration(s) {
  if (typeof s !== 'string') return null;
  const t = s.trim().replace(/^every\s+/i, '');
  const re = /(\d+(?:\.\d+)?)\s*(ms|seconds?|secs?|s|minutes?|mins?|m|hours?|h|days?|d|weeks?|w)/gy;
  const unit = { ms: 1, s: SECOND, m: MINUTE, h: HOUR, d: DAY, w: WEEK };
  let total = 0;
  let matched = false;
  let m;
  while ((m = re.exec(t)) !== null) {
    const u = m[2] === 'ms' ? 'ms' : m[2].startsWith('mi') || m[2] === 'm' ? 'm' : m[2][0];
    total += Number(m[1]) * unit[u];
    matched = true;
    while (t[re.lastIndex] === ' ') re.lastIndex++;
    if (re.lastIndex >= t.length) break;
  }
  if (!matched || re.lastIndex < t.length) return null;
  return total;
}

// ---------------------------------------------------------------------------
// Scale, view, zoom, pan

/** Linear time <-> pixel mapping of the view onto [left, left + width]. */
export function scale(viewFrom, viewTo, width, left = 0) {
  const span = viewTo - viewFrom;
  const k = span > 0 && width > 0 ? width / span : 0;
  return {
    k,
    x: (ms) => (k ? left + ((ms - viewFrom) * width) / span : left),
    t: (px) => (k ? viewFrom + (px - left) / k : viewFrom),
  };
}

const clampSpan = (span) => Math.min(MAX_SPAN, Math.max(MIN_SPAN, span));

/** A view of `span` ms with `at` placed at fraction `where` of the width (2/3: room for the future). */
export function centreOn(at, span, where = 2 / 3) {
  const s = clampSpan(span);
  const from = Math.round(at - s * where);
  return { from, to: from + s };
}

/**
 * Zoom the view. `how` is a zoom level (object or id) for an absolute span,
 * or a number multiplying the span (0.5 zooms in, 2 zooms out). The `anchor`
 * instant keeps its place on screen (default: the centre). The span is
 * clamped to [MIN_SPAN, MAX_SPAN].
 */
export function zoom(view, how, anchor) {
  const span = view.to - view.from;
  let next;
  if (typeof how === 'number') next = span * how;
  else if (typeof how === 'string') next = (zoomLevels.find((l) => l.id === how) ?? { ms: span }).ms;
  else if (how && typeof how.ms === 'number') next = how.ms;
  else next = span;
  next = clampSpan(next);
  const a = anchor ?? (view.from + view.to) / 2;
  const f = span > 0 ? (a - view.from) / span : 0.5;
  const from = Math.round(a - next * f);
  return { from, to: from + next };
}

/** The next zoom level in `dir` (+1 wider, -1 narrower) from the current span. */
export function stepLevel(view, dir) {
  const span = view.to - view.from;
  if (dir < 0) {
    const smaller = zoomLevels.filter((l) => l.ms < span * 0.999);
    return smaller.length ? smaller[smaller.length - 1] : zoomLevels[0];
  }
  return zoomLevels.find((l) => l.ms > span * 1.001) ?? zoomLevels[zoomLevels.length - 1];
}

/** Shift the view by `fraction` of its span (negative: back in time). */
export function pan(view, fraction) {
  const d = Math.round((view.to - view.from) * fraction);
  return { from: view.from + d, to: view.to + d };
}

/** The zoom level whose span is nearest to the view's, for aria-pressed. */
export function currentLevel(view) {
  const span = view.to - view.from;
  return zoomLevels.find((l) => Math.abs(l.ms - span) < l.ms * 0.001) ?? null;
}

// ---------------------------------------------------------------------------
// Ticks

// Candidate steps, finest first. Months are calendar months (UTC).
const TICK_STEPS = [
  ...[1, 2, 5, 10, 15, 30].map((n) => ({ ms: n * SECOND, unit: 's' })),
  ...[1, 2, 5, 10, 15, 30].map((n) => ({ ms: n * MINUTE, unit: 'min' })),
  ...[1, 2, 3, 6, 12].map((n) => ({ ms: n * HOUR, unit: 'h' })),
  { ms: DAY, unit: 'd' },
  { ms: 2 * DAY, unit: 'd' },
  { ms: WEEK, unit: 'w' },
  ...[1, 2, 3, 6, 12].map((n) => ({ ms: n * 30 * DAY, months: n, unit: 'mo' })),
];

/** The tick step ticks() would use: the finest one at least `minSpacing` px apart. */
export function tickStep(from, to, width, minSpacing = 90) {
  const span = to - from;
  if (!(span > 0) || !(width > 0)) return null;
  const pxPerMs = width / span;
  return TICK_STEPS.find((s) => s.ms * pxPerMs >= minSpacing) ?? TICK_STEPS[TICK_STEPS.length - 1];
}

function tickLabel(ms, step) {
  const d = new Date(ms);
  const date = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  const hm = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
  if (step.months) return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}`;
  if (step.ms >= DAY) return date;
  // A tick at UTC midnight names the day, so the axis says which day it is.
  if (ms % DAY === 0) return `${date.slice(5)} 00:00`;
  if (step.ms < MINUTE) return `${hm}:${pad(d.getUTCSeconds())}`;
  return hm;
}

/**
 * Axis ticks for [from, to] over `width` px: [{at, x, label}], x from 0.
 * Steps are human-friendly (1/2/5/10/15/30 s or min, 1/2/3/6/12 h, days,
 * weeks starting Monday, calendar months), labels in UTC.
 */
export function ticks(from, to, width, opts = {}) {
  const step = tickStep(from, to, width, opts.minSpacing ?? 90);
  if (!step) return [];
  const out = [];
  // Divide last: (t - from) * (width / span) can overshoot width by a rounding error.
  const push = (t) => out.push({ at: t, x: ((t - from) * width) / (to - from), label: tickLabel(t, step) });
  if (step.months) {
    const d = new Date(from);
    let y = d.getUTCFullYear();
    let m = d.getUTCMonth() - (d.getUTCMonth() % step.months);
    for (let i = 0; i < 1000; i++) {
      const t = Date.UTC(y, m, 1);
      if (t > to) break;
      if (t >= from) push(t);
      m += step.months;
      if (m >= 12) { y += Math.floor(m / 12); m %= 12; }
    }
    return out;
  }
  // Weeks start on Monday; 1970-01-01 was a Thursday, so Mondays are epoch + 4 d + n weeks.
  const offset = step.unit === 'w' ? 4 * DAY : 0;
  let t = Math.ceil((from - offset) / step.ms) * step.ms + offset;
  for (let i = 0; t <= to && i < 1000; i++, t += step.ms) push(t);
  return out;
}

// ---------------------------------------------------------------------------
// Keys: instants, segments, rows

/** The instants of a key, by name, in the order they happen. */
export const INSTANTS = Object.freeze([
  { field: 'published_at', name: 'published', label: 'Published' },
  { field: 'earliest_activation', name: 'earliest_activation', label: 'Earliest activation' },
  { field: 'scheduled_activation', name: 'scheduled_activation', label: 'Scheduled activation' },
  { field: 'activated_at', name: 'activated', label: 'Activated' },
  { field: 'projected_deactivation', name: 'projected_deactivation', label: 'Projected deactivation' },
  { field: 'deactivated_at', name: 'deactivated', label: 'Deactivated' },
  { field: 'retire_at', name: 'retire_at', label: 'Retires at' },
  { field: 'projected_retire_at', name: 'projected_retire', label: 'Projected retirement' },
  { field: 'ended_at', name: 'ended', label: 'Ended' },
]);

export const isEnded = (key) => key.state === 'retired' || key.state === 'revoked' || parseTime(key.ended_at) != null;

/** The label of the ended_at instant: revoked keys are revoked, the others retired. */
const endLabel = (key) => (key.state === 'revoked' ? 'Revoked' : 'Retired');

/** [{name, label, at, future}] for the instants the key has, in time order. */
export function keyInstants(key, now) {
  const out = [];
  for (const i of INSTANTS) {
    const at = parseTime(key[i.field]);
    if (at == null) continue;
    const name = i.name === 'ended' ? (key.state === 'revoked' ? 'revoked' : 'retired') : i.name;
    const label = i.name === 'ended' ? endLabel(key) : i.label;
    out.push({ name, label, field: i.field, at, future: now != null && at > now });
  }
  return out.sort((a, b) => a.at - b.at);
}

const maxOf = (...xs) => {
  const v = xs.filter((x) => x != null && Number.isFinite(x));
  return v.length ? Math.max(...v) : null;
};

/**
 * The state segments of a key, in time (no pixels):
 *   [{state: 'next'|'active'|'retiring', from, to, projected, open}]
 * and how it ends: end = {at, kind: 'retired'|'revoked'|'projected'|'open'}.
 *
 * Real segments come from the instants and stop at `now` for a key that has
 * not ended; from `now` on the key is drawn, projected, as far as its
 * instants go: next until its activation (the later of scheduled and
 * earliest activation), active until projected_deactivation (else
 * `successorActivation`, the lane's next key taking over, else
 * projected_retire_at − retention), retiring until retire_at or
 * projected_retire_at. With nothing to project to, the last state runs
 * open-ended (to Infinity).
 */
export function keySegments(key, ctx = {}) {
  const now = ctx.now ?? null;
  const published = parseTime(key.published_at);
  const activated = parseTime(key.activated_at);
  const deactivated = parseTime(key.deactivated_at);
  const retireAt = parseTime(key.retire_at);
  const projectedRetire = parseTime(key.projected_retire_at);
  const endedAt = parseTime(key.ended_at);
  const ended = isEnded(key);

  const points = [];
  if (published != null) points.push({ at: published, state: 'next' });
  if (activated != null) points.push({ at: activated, state: 'active' });
  if (deactivated != null) points.push({ at: deactivated, state: 'retiring' });
  points.sort((a, b) => a.at - b.at);
  if (!points.length) {
    // A key without a publication time: start it at its first known instant.
    const first = keyInstants(key, now)[0];
    if (!first) return { segments: [], end: null, start: null, stop: null };
    points.push({ at: first.at, state: key.state === 'next' ? 'next' : key.state === 'active' ? 'active' : 'retiring' });
  }
  const last = () => points[points.length - 1];
  let end;

  if (ended) {
    const at = endedAt ?? retireAt ?? deactivated ?? now ?? last().at;
    points.push({ at: Math.max(at, last().at), state: 'end' });
    end = { at: last().at, kind: key.state === 'revoked' ? 'revoked' : 'retired' };
  } else {
    const state = last().state;
    if (now != null && now > last().at) points.push({ at: now, state, isNow: true });
    // A projected instant already past (the server's answer is a few seconds
    // old, or the step is waiting) is due now: clamp it, never drop it, so
    // the chain goes on instead of running open-ended.
    const due = (t) => (t == null ? null : Math.max(t, last().at, now ?? -Infinity));
    // Project forward as far as the instants go: activation, deactivation, retirement.
    if (activated == null) {
      const act = due(maxOf(parseTime(key.scheduled_activation), parseTime(key.earliest_activation)));
      if (act != null) points.push({ at: act, state: 'active', projected: true });
    }
    if (deactivated == null && last().state === 'active') {
      const retention = ctx.retentionMs ?? null;
      const d = due(parseTime(key.projected_deactivation) ?? ctx.successorActivation
        ?? (projectedRetire != null && retention != null ? projectedRetire - retention : null));
      if (d != null) points.push({ at: d, state: 'retiring', projected: true });
    }
    if (last().state === 'retiring') {
      const retire = due(retireAt ?? projectedRetire);
      if (retire != null) {
        points.push({ at: retire, state: 'end', projected: true });
        end = { at: retire, kind: 'projected' };
      }
    }
    if (!end) {
      points.push({ at: Infinity, state: 'end', projected: true, open: true });
      end = { at: Infinity, kind: 'open' };
    }
  }

  const segments = [];
  for (let i = 0; i + 1 < points.length; i++) {
    const p = points[i];
    const q = points[i + 1];
    if (p.state === 'end') break;
    if (!(q.at > p.at)) continue;
    segments.push({
      state: p.state,
      from: p.at,
      to: q.at,
      projected: !!(p.projected || p.isNow || (now != null && p.at >= now && !ended)),
      open: !!q.open,
    });
  }
  return { segments, end, start: points[0].at, stop: end ? end.at : last().at };
}

/**
 * Greedy interval partitioning: items [{start, end}] sorted by start get the
 * first row whose last item ended at or before their start. Returns the row
 * index per item (in input order) — the minimum number of rows.
 */
export function assignRows(items) {
  const order = items.map((it, i) => i).sort((a, b) => items[a].start - items[b].start || a - b);
  const rowEnds = [];
  const rows = new Array(items.length);
  for (const i of order) {
    const { start, end } = items[i];
    let r = rowEnds.findIndex((e) => e <= start);
    if (r < 0) { r = rowEnds.length; rowEnds.push(end); } else rowEnds[r] = end;
    rows[i] = r;
  }
  return rows;
}

/** Clip [x1, x2] to [lo, hi]; null when nothing is left. */
export function clipSpan(x1, x2, lo, hi) {
  const a = Math.max(x1, lo);
  const b = Math.min(x2, hi);
  if (!(b > a) && !(b === a && x1 === x2 && a >= lo && a <= hi)) return null;
  return { x: a, width: Math.max(0, b - a), clippedStart: x1 < lo, clippedEnd: x2 > hi };
}

/** The time the lane's next key takes over: when the active key projects to deactivate. */
function successorActivation(lane, upcoming) {
  const keys = lane.keys ?? [];
  const nextKid = lane.rotate?.next;
  const next = keys.find((k) => k.kid === nextKid && k.state === 'next') ?? keys.find((k) => k.state === 'next');
  const rot = (upcoming ?? [])
    .filter((u) => u.alg === lane.alg && (u.event === 'rotation' || u.event === 'rotation_waiting_for_publish_ahead'))
    .map((u) => parseTime(u.at));
  return maxOf(
    next && parseTime(next.scheduled_activation),
    next && parseTime(next.earliest_activation),
    rot.length ? Math.min(...rot.filter((x) => x != null)) : null,
  );
}

export const UPCOMING_LABELS = Object.freeze({
  rotation: 'rotation',
  rotation_waiting_for_publish_ahead: 'rotation (waiting for publish-ahead)',
  retire: 'retirement',
});

/**
 * Lay the timeline out for a view and a width (px, including the lane-label
 * gutter on the left). Returns
 *   { width, height, left, right, now, nowX, ticks, upcoming, lanes }
 * with lanes [{alg, y, height, rows: [{index, y, bars}], bars}] and each bar
 *   { kid, alg, state, key, row, y, barY, barHeight, start, stop, visible,
 *     segments: [{state, from, to, projected, open, x, width, clippedStart, clippedEnd}],
 *     windows: [{kind, from, to, projected, x, width}],
 *     markers: [{name, label, at, future, x}],
 *     end: {at, kind, x|null} }
 * x values are absolute SVG coordinates, clipped to the plot area.
 */
export function layout(timeline, view, width, opts = {}) {
  const o = { gutter: 96, top: 44, rowHeight: 30, labelHeight: 13, lanePad: 6, laneGap: 6, bottom: 6, ...opts };
  const now = opts.now ?? parseTime(timeline?.now);
  const left = o.gutter;
  const right = Math.max(left, width);
  const sc = scale(view.from, view.to, right - left, left);
  const X = (ms) => (ms === Infinity ? Infinity : ms === -Infinity ? -Infinity : sc.x(ms));
  const retentionMs = timeline?.policy?.retention_seconds != null ? timeline.policy.retention_seconds * SECOND : null;
  const inView = (ms) => ms >= view.from && ms <= view.to;

  let y = o.top;
  const lanes = [];
  for (const lane of timeline?.lanes ?? []) {
    const succ = successorActivation(lane, timeline.upcoming);
    const bars = (lane.keys ?? []).map((key) => {
      const seg = keySegments(key, { now, successorActivation: key.state === 'active' ? succ : null, retentionMs });
      const windows = (key.windows ?? [])
        .map((w) => ({ kind: w.kind, from: parseTime(w.from), to: parseTime(w.to), projected: !!w.projected }))
        .filter((w) => w.from != null && w.to != null && w.to >= w.from);
      const start = Math.min(seg.start ?? Infinity, ...windows.map((w) => w.from));
      const stop = Math.max(seg.stop ?? -Infinity, ...windows.map((w) => w.to));
      return { key, seg, windows, start, stop };
    }).filter((b) => Number.isFinite(b.start));
    // Oldest first, so rows fill from the top in publication order.
    bars.sort((a, b) => a.start - b.start || String(a.key.kid).localeCompare(String(b.key.kid)));
    const rowOf = assignRows(bars.map((b) => ({ start: b.start, end: b.stop })));
    const nRows = Math.max(1, ...rowOf.map((r) => r + 1));
    const laneY = y;
    const rows = Array.from({ length: nRows }, (_, i) => ({ index: i, y: laneY + o.lanePad + i * o.rowHeight, bars: [] }));
    const laidOut = bars.map((b, i) => {
      const row = rowOf[i];
      const ry = rows[row].y;
      const segments = b.seg.segments
        .map((s) => {
          const c = clipSpan(X(s.from), X(s.to), left, right);
          return c && { ...s, ...c };
        })
        .filter(Boolean);
      const windows = b.windows
        .map((w) => {
          const c = clipSpan(X(w.from), X(w.to), left, right);
          return c && { ...w, ...c };
        })
        .filter(Boolean);
      const markers = keyInstants(b.key, now).filter((m) => inView(m.at)).map((m) => ({ ...m, x: X(m.at) }));
      const end = b.seg.end ? { ...b.seg.end, x: Number.isFinite(b.seg.end.at) && inView(b.seg.end.at) ? X(b.seg.end.at) : null } : null;
      const bar = {
        kid: b.key.kid,
        alg: b.key.alg ?? lane.alg,
        state: b.key.state,
        key: b.key,
        row,
        y: ry,
        labelY: ry + o.labelHeight - 3,
        barY: ry + o.labelHeight,
        barHeight: o.rowHeight - o.labelHeight - 3,
        start: b.start,
        stop: b.stop,
        visible: b.stop >= view.from && b.start <= view.to,
        segments,
        windows,
        markers,
        end,
      };
      rows[row].bars.push(bar);
      return bar;
    });
    const height = o.lanePad * 2 + nRows * o.rowHeight;
    lanes.push({ alg: lane.alg, y: laneY, height, rows, bars: laidOut, rotate: lane.rotate ?? null });
    y += height + o.laneGap;
  }

  const upcoming = (timeline?.upcoming ?? [])
    .map((u) => ({ ...u, atMs: parseTime(u.at), label: UPCOMING_LABELS[u.event] ?? u.event }))
    .filter((u) => u.atMs != null)
    .sort((a, b) => a.atMs - b.atMs)
    .map((u) => ({ ...u, x: inView(u.atMs) ? X(u.atMs) : null, laneIndex: lanes.findIndex((l) => l.alg === u.alg) }));

  return {
    width: right,
    height: y - o.laneGap + o.bottom,
    left,
    right,
    top: o.top,
    now,
    nowX: now != null && inView(now) ? X(now) : null,
    ticks: ticks(view.from, view.to, right - left).map((t) => ({ ...t, x: t.x + left })),
    upcoming,
    lanes,
  };
}

// ---------------------------------------------------------------------------
// Default zoom

/** The rotation period of a lane as observed: activation to the next activation. */
function lanePeriod(lane) {
  const acts = (lane.keys ?? [])
    .map((k) => parseTime(k.activated_at) ?? (k.state === 'next' ? maxOf(parseTime(k.scheduled_activation), parseTime(k.earliest_activation)) : null))
    .filter((x) => x != null)
    .sort((a, b) => a - b);
  const diffs = [];
  for (let i = 1; i < acts.length; i++) if (acts[i] > acts[i - 1]) diffs.push(acts[i] - acts[i - 1]);
  if (!diffs.length) return null;
  diffs.sort((a, b) => a - b);
  return diffs[Math.floor(diffs.length / 2)];
}

/**
 * The smallest zoom level showing the active key's whole expected life
 * (published to projected retirement) and about three rotation periods.
 * The period comes from the keys' activations, else from "every …" in the
 * policy, else a day (the default cron schedule rotates daily).
 */
export function defaultLevel(timeline) {
  const p = timeline?.policy ?? {};
  let need = 0;
  let period = null;
  for (const lane of timeline?.lanes ?? []) {
    const lp = lanePeriod(lane);
    if (lp != null) period = Math.max(period ?? 0, lp);
    const active = (lane.keys ?? []).find((k) => k.state === 'active');
    if (active) {
      const from = parseTime(active.published_at);
      const to = maxOf(parseTime(active.retire_at), parseTime(active.projected_retire_at));
      if (from != null && to != null) need = Math.max(need, to - from);
    }
  }
  period ??= parseDuration(p.schedule ?? '') ?? DAY;
  if (!need) need = ((p.publish_ahead_seconds ?? 0) + (p.retention_seconds ?? 0)) * SECOND + period;
  need = Math.max(need, 3 * period);
  return zoomLevels.find((l) => l.ms >= need) ?? zoomLevels[zoomLevels.length - 1];
}

// ---------------------------------------------------------------------------
// Accessibility text

const STATE_WORDS = { next: 'next (published, not yet signing)', active: 'active (signing)', retiring: 'retiring (verifying only)', retired: 'retired', revoked: 'revoked' };

/** One sentence list describing a key (a bar or a raw key) for aria-label. */
export function describeKey(bar, now) {
  const key = bar?.key ?? bar;
  if (!key) return '';
  const parts = [`Key ${key.kid}, ${key.alg ?? ''}, ${STATE_WORDS[key.state] ?? key.state}`];
  if (key.custody) parts.push(`custody ${key.custody}`);
  if (key.early_activation) parts.push(`early activation: ${key.early_activation}`);
  for (const i of keyInstants(key, now)) {
    const rel = now != null ? ` (${formatRelative(i.at, now)})` : '';
    parts.push(`${i.label} ${formatUtc(i.at)}${rel}`);
  }
  return parts.join('. ') + '.';
}

// ---------------------------------------------------------------------------
// Prometheus text exposition

/**
 * Prometheus / OpenMetrics text -> Map(name -> [{labels, value}]).
 * Comments (# HELP, # TYPE, # EOF), blank and malformed lines are skipped;
 * label values unescape \\, \" and \n; a timestamp or exemplar after the
 * value is ignored. Values NaN, +Inf, -Inf are understood.
 */
export function parseMetrics(text) {
  const out = new Map();
  for (const raw of String(text ?? '').split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const s = parseSample(line);
    if (!s) continue;
    if (!out.has(s.name)) out.set(s.name, []);
    out.get(s.name).push({ labels: s.labels, value: s.value });
  }
  return out;
}

function parseNumber(t) {
  if (t === '+Inf' || t === 'Inf' || t === '+inf' || t === 'inf') return Infinity;
  if (t === '-Inf' || t === '-inf') return -Infinity;
  if (t === 'NaN' || t === 'nan') return NaN;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) return undefined;
  return Number(t);
}

function parseSample(line) {
  const nm = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
  if (!nm) return null;
  const name = nm[0];
  let i = name.length;
  const labels = {};
  if (line[i] === '{') {
    i++;
    for (;;) {
      while (line[i] === ' ' || line[i] === ',') i++;
      if (line[i] === '}') { i++; break; }
      const ln = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(i));
      if (!ln) return null;
      i += ln[0].length;
      while (line[i] === ' ') i++;
      if (line[i] !== '=') return null;
      i++;
      while (line[i] === ' ') i++;
      if (line[i] !== '"') return null;
      i++;
      let v = '';
      for (;;) {
        const c = line[i];
        if (c === undefined) return null;
        if (c === '\\') {
          const n = line[i + 1];
          v += n === 'n' ? '\n' : n === '"' ? '"' : n === '\\' ? '\\' : '\\' + (n ?? '');
          i += 2;
          continue;
        }
        if (c === '"') { i++; break; }
        v += c;
        i++;
      }
      if (ln[0] !== '__proto__') labels[ln[0]] = v;
    }
  }
  const rest = line.slice(i).trim().split(/\s+/);
  const value = parseNumber(rest[0] ?? '');
  if (value === undefined) return null;
  return { name, labels, value };
}

// ---------------------------------------------------------------------------
// Watches: what the runbook's alerts look at, as data

/**
 * Each watch: metric `name`, `filter` (label -> exact string, or {re} for a
 * fully anchored regular expression as in PromQL =~), `kind` gauge|counter,
 * `by` (group per this label), `condition` {op, value} and the `severity` it
 * raises when true (null condition: shown only), and the runbook `alert`.
 * Counters are judged on their increase over the page's observation window.
 */
export const WATCHES = Object.freeze([
  { id: 'lifecycle_failing', name: 'jwksd_lifecycle_failing', kind: 'gauge', condition: { op: '==', value: 1 }, severity: 'firing', alert: 'JwksdLifecycleFailing', text: 'key generation or a store write keeps failing' },
  { id: 'rotation_overdue', name: 'jwksd_next_rotation_seconds', kind: 'gauge', by: 'alg', condition: { op: '<', value: -600 }, severity: 'firing', alert: 'JwksdRotationOverdue', text: 'rotation overdue (seconds until the next rotation)' },
  { id: 'active_keys', name: 'jwksd_published_keys', filter: { state: 'active' }, kind: 'gauge', by: 'alg', configured: true, condition: { op: '!=', value: 1 }, severity: 'firing', alert: 'JwksdActiveKeyCount', text: 'exactly one active key per algorithm' },
  { id: 'published_keys', name: 'jwksd_published_keys', kind: 'gauge', by: 'alg', configured: true, condition: null, alert: 'JwksdTooManyPublishedKeys', text: 'published keys per algorithm (bound: see check-config)' },
  { id: 'admin_auth_failures', name: 'jwksd_admin_auth_failures_total', kind: 'counter', condition: { op: '>', value: 0 }, severity: 'warning', alert: 'JwksdAdminAuthFailures', text: 'admin authentication failures (stale or stolen tokens, probing)' },
  { id: 'admin_rate_limited', name: 'jwksd_admin_auth_failures_total', filter: { status: '429' }, kind: 'counter', condition: { op: '>', value: 0 }, severity: 'warning', alert: 'JwksdAdminRateLimited', text: 'a client is being answered 429' },
  { id: 'sign_errors', name: 'jwksd_sign_requests_total', filter: { result: { re: 'error|unavailable' } }, kind: 'counter', condition: { op: '>', value: 0 }, severity: 'warning', alert: 'JwksdSignErrors', text: 'sign requests that failed' },
  { id: 'token_errors', name: 'jwksd_token_errors_total', kind: 'counter', condition: { op: '>', value: 0 }, severity: 'warning', alert: 'JwksdTokenErrors', text: 'PKCS#11 token errors' },
  { id: 'webhook_failing', name: 'jwksd_webhook_deliveries_total', filter: { result: 'failed' }, kind: 'counter', condition: { op: '>', value: 0 }, severity: 'warning', alert: 'JwksdWebhookFailing', text: 'webhook deliveries that failed' },
  { id: 'audit_write_failures', name: 'jwksd_audit_write_failures_total', kind: 'counter', condition: { op: '>', value: 0 }, severity: 'warning', alert: 'JwksdAuditWriteFailures', text: 'a refused command went unrecorded' },
  { id: 'clients_reload_failed', name: 'jwksd_clients_reloads_total', filter: { result: 'failed' }, kind: 'counter', condition: { op: '>', value: 0 }, severity: 'warning', alert: 'JwksdClientsReloadFailed', text: 'the clients file is broken; the last good list serves' },
  { id: 'clock_offset', name: 'jwksd_clock_offset_seconds', kind: 'gauge', condition: { op: '!=', value: 0 }, severity: 'warning', alert: 'JwksdClockDisagrees', text: 'clock offset against the store (seconds)' },
  { id: 'leader', name: 'jwksd_leader', kind: 'gauge', condition: null, alert: 'JwksdNotOneLeader', text: 'this replica leads (1) or follows (0)' },
]);

/** Text and symbol per status, so status never depends on colour alone. */
export const STATUS_TEXT = Object.freeze({
  ok: '✓ ok',
  warning: '▲ warning',
  firing: '✕ firing',
  info: 'ℹ shown',
  absent: '– not reported',
});

const RANK = { absent: 0, info: 1, ok: 2, warning: 3, firing: 4 };
const worst = (a, b) => (RANK[b] > RANK[a] ? b : a);

/** Does a sample's label set satisfy the filter? */
export function matchLabels(labels, filter) {
  for (const [k, want] of Object.entries(filter ?? {})) {
    const have = labels?.[k] ?? '';
    if (want && typeof want === 'object' && 're' in want) {
      if (!new RegExp(`^(?:${want.re})$`).test(have)) return false;
    } else if (have !== want) return false;
  }
  return true;
}

/** A stable key for a label set (sorted), to pair series across samples. */
export function seriesKey(labels) {
  return Object.keys(labels ?? {}).sort().map((k) => `${k}=${JSON.stringify(labels[k])}`).join(',');
}

function test(cond, v) {
  switch (cond.op) {
    case '==': return v === cond.value;
    case '!=': return v !== cond.value;
    case '<': return v < cond.value;
    case '<=': return v <= cond.value;
    case '>': return v > cond.value;
    case '>=': return v >= cond.value;
    default: return false;
  }
}

/** A watch's metric with its filter, as PromQL would write it. */
export function watchSelector(w) {
  const f = Object.entries(w.filter ?? {}).map(([k, v]) => (v && typeof v === 'object' ? `${k}=~"${v.re}"` : `${k}="${v}"`));
  return f.length ? `${w.name}{${f.join(',')}}` : w.name;
}

/**
 * Evaluate the watches on the current sample `cur` (a parseMetrics map)
 * against the baseline sample `prev` (the oldest one in the observation
 * window, or null before there is one). Returns per watch
 *   { watch, status, value, total?, groups: [{group, value, status}], baseline }
 * Gauges are judged on their current value (summed per `by` group);
 * counters on their increase since `prev`, summed over the matching series:
 * a series missing from `prev` counts whole (label series appear on their
 * first increment), a counter that went down was reset and counts its value.
 * A metric absent from `cur` has status "absent" ("not reported").
 * Watches marked `configured` judge only the series of `opts.algorithms`
 * (the timeline's lanes), as the runbook's alert names the configured
 * algorithms: the metric also reports 0 for every other one.
 */
export function evaluateWatches(prev, cur, watches = WATCHES, opts = {}) {
  const algs = opts.algorithms ? new Set(opts.algorithms) : null;
  const wanted = (w, s) => matchLabels(s.labels, w.filter) && !(w.configured && algs && !algs.has(s.labels.alg));
  return watches.map((w) => {
    const series = (cur?.get(w.name) ?? []).filter((s) => wanted(w, s));
    if (!series.length) return { watch: w, status: 'absent', value: null, groups: [], baseline: prev != null };
    if (w.kind === 'counter') {
      const before = new Map((prev?.get(w.name) ?? []).filter((s) => wanted(w, s)).map((s) => [seriesKey(s.labels), s.value]));
      let inc = 0;
      let total = 0;
      for (const s of series) {
        total += s.value;
        if (!prev) continue;
        const b = before.get(seriesKey(s.labels));
        inc += b == null ? s.value : s.value >= b ? s.value - b : s.value;
      }
      const status = w.condition ? (test(w.condition, inc) ? w.severity : 'ok') : 'info';
      return { watch: w, status, value: inc, total, groups: [{ group: null, value: inc, status }], baseline: prev != null };
    }
    const groups = new Map();
    for (const s of series) {
      const g = w.by ? s.labels[w.by] ?? '' : null;
      groups.set(g, (groups.get(g) ?? 0) + s.value);
    }
    let status = w.condition ? 'ok' : 'info';
    const out = [...groups].sort(([a], [b]) => String(a).localeCompare(String(b))).map(([group, value]) => {
      const st = w.condition ? (test(w.condition, value) ? w.severity : 'ok') : 'info';
      status = worst(status, st);
      return { group, value, status: st };
    });
    return { watch: w, status, value: out.length === 1 ? out[0].value : null, groups: out, baseline: prev != null };
  });
}

/** Add a sample {at, metrics} to the history, dropping those older than windowMs (keeps one at the edge). */
export function recordSample(history, sample, windowMs = 5 * MINUTE) {
  const h = [...history, sample].sort((a, b) => a.at - b.at);
  const cutoff = sample.at - windowMs;
  // Keep the newest sample at or before the cutoff, so a full window is always covered.
  let first = 0;
  for (let i = 0; i < h.length; i++) if (h[i].at <= cutoff) first = i;
  return h.slice(first);
}

/** The baseline for increases at `at`: the oldest sample no older than windowMs, other than the current one. */
export function baselineSample(history, at, windowMs = 5 * MINUTE) {
  const candidates = history.filter((s) => s.at < at && s.at >= at - windowMs);
  return candidates.length ? candidates[0] : null;
}
