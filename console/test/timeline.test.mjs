// Unit tests of timeline.js: `node --test console/test/`
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import * as TL from '../timeline.js';

const { SECOND, MINUTE, HOUR, DAY } = TL;
const T = Date.UTC(2026, 11, 2, 17, 0, 0); // 2026-12-02T17:00:00Z
const iso = (ms) => new Date(ms).toISOString();
const at = (s) => iso(T + s * SECOND);

// A daemon rotating every 3 s: publish_ahead 2 s, retention 8 s.
function fastTimeline() {
  return {
    now: at(0),
    version: 12,
    audit_seq: 40,
    replica: 'host-1',
    policy: { schedule: 'every 3s', publish_ahead_seconds: 2, retention_seconds: 8, max_token_lifetime_seconds: 4 },
    lanes: [{
      alg: 'ES256',
      keys: [
        { kid: 'C', alg: 'ES256', state: 'next', custody: 'software', published_at: at(-1), earliest_activation: at(1), scheduled_activation: at(2), projected_deactivation: at(5), projected_retire_at: at(13),
          windows: [{ kind: 'publish_ahead', from: at(-1), to: at(1), projected: false }], revoke: { verifiers_stop_by: at(1), summary: 'x' } },
        { kid: 'B', alg: 'ES256', state: 'active', custody: 'software', published_at: at(-3), activated_at: at(-1), projected_deactivation: at(2), projected_retire_at: at(10),
          windows: [{ kind: 'retention', from: at(2), to: at(10), projected: true }], revoke: { verifiers_stop_by: at(1), summary: 'y' } },
        { kid: 'A', alg: 'ES256', state: 'retiring', custody: 'software', published_at: at(-6), activated_at: at(-4), deactivated_at: at(-1), retire_at: at(7),
          windows: [{ kind: 'retention', from: at(-1), to: at(7), projected: false }], revoke: { verifiers_stop_by: at(1), summary: 'z' } },
        { kid: 'D', alg: 'ES256', state: 'revoked', custody: 'software', published_at: at(-20), activated_at: at(-18), ended_at: at(-15), windows: [], revoke: null },
      ],
      rotate: { active: 'B', next: 'C', earliest_safe: at(1), safe_now: false, force_breaks: null, summary: 's' },
    }],
    upcoming: [
      { at: at(7), alg: 'ES256', kid: 'A', event: 'retire' },
      { at: at(2), alg: 'ES256', kid: 'C', event: 'rotation' },
    ],
  };
}

// The default daily rotation: publish_ahead 1 h, retention 1 d.
function dailyTimeline() {
  return {
    now: iso(T),
    policy: { schedule: '0 0 3 * * *', publish_ahead_seconds: 3600, retention_seconds: 86400 },
    lanes: [{
      alg: 'RS256',
      keys: [
        { kid: 'old', state: 'retiring', published_at: iso(T - 2 * DAY - HOUR), activated_at: iso(T - 2 * DAY), deactivated_at: iso(T - DAY), retire_at: iso(T), windows: [] },
        { kid: 'cur', state: 'active', published_at: iso(T - DAY - HOUR), activated_at: iso(T - DAY), projected_deactivation: iso(T + 10 * HOUR), projected_retire_at: iso(T + DAY + 10 * HOUR), windows: [] },
        { kid: 'nxt', state: 'next', published_at: iso(T - 13 * HOUR), scheduled_activation: iso(T + 10 * HOUR), windows: [] },
      ],
      rotate: { safe_now: true, summary: '' },
    }],
    upcoming: [],
  };
}

describe('time parsing and formatting', () => {
  test('parseTime reads RFC 3339 with Z, offsets and long fractions', () => {
    assert.equal(TL.parseTime('2026-12-02T17:00:00Z'), T);
    assert.equal(TL.parseTime('2026-12-02T17:00:00.250Z'), T + 250);
    assert.equal(TL.parseTime('2026-12-02T17:00:00.123456789Z'), T + 123);
    assert.equal(TL.parseTime('2026-12-02T19:30:00+02:30'), T);
    assert.equal(TL.parseTime('2026-12-02T12:00:00-05:00'), T);
  });

  test('parseTime gives null for absent or malformed values', () => {
    for (const bad of [null, undefined, '', 'yesterday', '2026-13-02T17:00:00Z', '2026-12-02 17:00', 42n]) {
      assert.equal(TL.parseTime(bad), null, String(bad));
    }
  });

  test('formatUtc, formatRelative and formatDuration', () => {
    assert.equal(TL.formatUtc(T + 3 * SECOND), '2026-12-02 17:00:03Z');
    assert.equal(TL.formatRelative(T + 2 * SECOND, T), 'in 2 s');
    assert.equal(TL.formatRelative(T - 3 * MINUTE, T), '3 min ago');
    assert.equal(TL.formatRelative(T + 3 * HOUR, T), 'in 3 h');
    assert.equal(TL.formatRelative(T + 5 * DAY, T), 'in 5 d');
    assert.equal(TL.formatRelative(T + 100, T), 'now');
    assert.equal(TL.formatDuration(2 * HOUR + 30 * MINUTE), '2 h 30 min');
    assert.equal(TL.formatDuration(8 * SECOND), '8 s');
    assert.equal(TL.formatDuration(DAY), '1 d');
  });

  test('parseDuration reads "every …" schedules and refuses cron lines', () => {
    assert.equal(TL.parseDuration('every 3s'), 3 * SECOND);
    assert.equal(TL.parseDuration('1h30min'), 90 * MINUTE);
    assert.equal(TL.parseDuration('2 d'), 2 * DAY);
    assert.equal(TL.parseDuration('0 0 3 * * *'), null);
  });
});

describe('scale', () => {
  test('maps the view onto the width and back', () => {
    const sc = TL.scale(T, T + DAY, 1000, 50);
    assert.equal(sc.x(T), 50);
    assert.equal(sc.x(T + DAY), 1050);
    assert.equal(sc.x(T + DAY / 2), 550);
    assert.equal(sc.t(sc.x(T + 12345)), T + 12345);
  });

  test('a 2 h window at a 1 day / 1000 px view is about 83 px', () => {
    const tl = dailyTimeline();
    tl.lanes[0].keys[2].windows = [{ kind: 'publish_ahead', from: iso(T - 13 * HOUR), to: iso(T - 11 * HOUR), projected: false }];
    const L = TL.layout(tl, { from: T - 16 * HOUR, to: T + 8 * HOUR }, 1000, { gutter: 0, now: T });
    const bar = L.lanes[0].bars.find((b) => b.kid === 'nxt');
    assert.equal(bar.windows.length, 1);
    assert.ok(Math.abs(bar.windows[0].width - 83.33) < 0.1, `width ${bar.windows[0].width}`);
    assert.ok(Math.abs(bar.windows[0].x - (3 * 1000) / 24) < 0.1);
  });
});

describe('segments from the instants', () => {
  const tl = fastTimeline();
  const key = (kid) => tl.lanes[0].keys.find((k) => k.kid === kid);
  const strip = (segs) => segs.map((s) => [s.state, (s.from - T) / SECOND, s.to === Infinity ? Infinity : (s.to - T) / SECOND, s.projected]);

  test('a retiring key: real states up to now, then projected to retire_at', () => {
    const r = TL.keySegments(key('A'), { now: T });
    assert.deepEqual(strip(r.segments), [
      ['next', -6, -4, false],
      ['active', -4, -1, false],
      ['retiring', -1, 0, false],
      ['retiring', 0, 7, true],
    ]);
    assert.deepEqual(r.end, { at: T + 7 * SECOND, kind: 'projected' });
  });

  test('an active key projects its deactivation and retirement', () => {
    const r = TL.keySegments(key('B'), { now: T });
    assert.deepEqual(strip(r.segments), [
      ['next', -3, -1, false],
      ['active', -1, 0, false],
      ['active', 0, 2, true],
      ['retiring', 2, 10, true],
    ]);
  });

  test('a next key projects activation (the later of scheduled and earliest), deactivation, retirement', () => {
    const r = TL.keySegments(key('C'), { now: T });
    assert.deepEqual(strip(r.segments), [
      ['next', -1, 0, false],
      ['next', 0, 2, true],
      ['active', 2, 5, true],
      ['retiring', 5, 13, true],
    ]);
  });

  test('a revoked key ends at its revocation, nothing projected', () => {
    const r = TL.keySegments(key('D'), { now: T });
    assert.deepEqual(strip(r.segments), [
      ['next', -20, -18, false],
      ['active', -18, -15, false],
    ]);
    assert.equal(r.end.kind, 'revoked');
    assert.equal(r.end.at, T - 15 * SECOND);
  });

  test('without projected instants the active key falls back to the successor, then runs open-ended', () => {
    const k = { kid: 'X', state: 'active', published_at: at(-5), activated_at: at(-3) };
    const withSucc = TL.keySegments(k, { now: T, successorActivation: T + 4 * SECOND });
    assert.deepEqual(strip(withSucc.segments).at(-1), ['retiring', 4, Infinity, true]);
    assert.equal(withSucc.segments.at(-1).open, true);
    const bare = TL.keySegments(k, { now: T });
    assert.deepEqual(strip(bare.segments).at(-1), ['active', 0, Infinity, true]);
    assert.equal(bare.end.kind, 'open');
  });

  test('a projected instant the clock has passed is due now, not dropped (no open-ended bar)', () => {
    // The answer said deactivation at T+2 s; it is now T+2.5 s and the refetch has not come yet.
    const r = TL.keySegments(key('B'), { now: T + 2500 });
    assert.deepEqual(strip(r.segments).slice(-2), [['active', -1, 2.5, false], ['retiring', 2.5, 10, true]]);
    assert.equal(r.end.kind, 'projected');
    // A retiring key past its retire_at ends now.
    const a = TL.keySegments(key('A'), { now: T + 9 * SECOND });
    assert.notEqual(r.end.at, Infinity);
    assert.equal(a.end.at, T + 9 * SECOND);
    assert.equal(a.segments.at(-1).to, T + 9 * SECOND);
  });

  test('an instant already past that never happened is not projected into the past', () => {
    // Scheduled activation passed, still waiting for publish_ahead: next continues to the earliest activation.
    const k = { kid: 'W', state: 'next', published_at: at(-5), scheduled_activation: at(-1), earliest_activation: at(3) };
    const r = TL.keySegments(k, { now: T });
    assert.deepEqual(strip(r.segments).slice(0, 2), [['next', -5, 0, false], ['next', 0, 3, true]]);
  });
});

describe('layout', () => {
  const view = { from: T - 5 * SECOND, to: T + 5 * SECOND };
  const L = TL.layout(fastTimeline(), view, 1000, { gutter: 0, now: T });
  const bar = (kid) => L.lanes[0].bars.find((b) => b.kid === kid);

  test('segments are clipped to the view', () => {
    const a = bar('A');
    const next = a.segments.find((s) => s.state === 'next'); // T-6..T-4: starts before the view
    assert.equal(next.x, 0);
    assert.ok(Math.abs(next.width - 100) < 1e-9);
    assert.equal(next.clippedStart, true);
    const last = bar('B').segments.at(-1); // retiring T+2..T+10: ends after the view
    assert.deepEqual([last.state, last.x, last.width, last.clippedStart, last.clippedEnd], ['retiring', 700, 300, false, true]);
    // C's retiring starts at T+5, the view's edge: nothing of it is left to draw.
    assert.equal(bar('C').segments.at(-1).state, 'active');
    for (const b of L.lanes[0].bars) for (const s of b.segments) {
      assert.ok(s.x >= 0 && s.x + s.width <= 1000, `${b.kid} ${s.state} ${s.x} ${s.width}`);
    }
  });

  test('a key entirely outside the view is not visible and has no segments', () => {
    const d = bar('D');
    assert.equal(d.visible, false);
    assert.equal(d.segments.length, 0);
  });

  test('overlapping keys of a lane get their own rows; a finished key frees its row', () => {
    const rows = Object.fromEntries(L.lanes[0].bars.map((b) => [b.kid, b.row]));
    assert.deepEqual(rows, { D: 0, A: 0, B: 1, C: 2 });
    assert.equal(L.lanes[0].rows.length, 3);
    assert.ok(bar('B').y > bar('A').y && bar('C').y > bar('B').y);
    for (const row of L.lanes[0].rows) {
      const spans = row.bars.map((b) => [b.start, b.stop]).sort((x, y) => x[0] - y[0]);
      for (let i = 1; i < spans.length; i++) assert.ok(spans[i][0] >= spans[i - 1][1], 'overlap in one row');
    }
  });

  test('markers for each instant in view, with x to scale', () => {
    const c = bar('C');
    const names = c.markers.map((m) => m.name);
    assert.deepEqual(names, ['published', 'earliest_activation', 'scheduled_activation', 'projected_deactivation']);
    const sched = c.markers.find((m) => m.name === 'scheduled_activation');
    assert.equal(sched.x, 700);
    assert.equal(sched.future, true);
    const a = bar('A');
    // Published (T-6 s) and retire-at (T+7 s) are outside the view: no marker for them.
    assert.deepEqual(a.markers.map((m) => [m.name, m.x]), [['activated', 100], ['deactivated', 400]]);
  });

  test('windows are separate spans, clipped, with their projected flag', () => {
    const b = bar('B');
    assert.equal(b.windows.length, 1);
    assert.equal(b.windows[0].kind, 'retention');
    assert.equal(b.windows[0].projected, true);
    assert.equal(b.windows[0].x, 700);
    assert.equal(b.windows[0].width, 300); // T+2..T+10 clipped at T+5
  });

  test('now line, ticks offset by the gutter, upcoming sorted with x', () => {
    assert.equal(L.nowX, 500);
    const G = TL.layout(fastTimeline(), view, 1096, { gutter: 96, now: T });
    assert.equal(G.nowX, 596);
    assert.ok(G.ticks.every((t) => t.x >= 96 && t.x <= 1096));
    // Sorted by time; the retirement at T+7 s is outside the view, so it has no x.
    assert.deepEqual(L.upcoming.map((u) => [u.event, u.x, u.label]), [['rotation', 700, 'rotation'], ['retire', null, 'retirement']]);
    const outside = TL.layout(fastTimeline(), { from: T + HOUR, to: T + 2 * HOUR }, 1000, { now: T });
    assert.equal(outside.nowX, null);
  });

  test('lanes stack vertically and the height covers them', () => {
    const tl = fastTimeline();
    tl.lanes.push({ alg: 'RS256', keys: [{ kid: 'R', state: 'active', published_at: at(-3), activated_at: at(-1), windows: [] }] });
    const M = TL.layout(tl, view, 1000, { now: T });
    assert.equal(M.lanes.length, 2);
    assert.ok(M.lanes[1].y >= M.lanes[0].y + M.lanes[0].height);
    assert.ok(M.height >= M.lanes[1].y + M.lanes[1].height);
  });
});

describe('assignRows', () => {
  test('never overlaps within a row and uses as many rows as the deepest overlap', () => {
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let round = 0; round < 50; round++) {
      const items = Array.from({ length: 12 }, () => {
        const start = Math.floor(rnd() * 100);
        return { start, end: start + 1 + Math.floor(rnd() * 30) };
      });
      const rows = TL.assignRows(items);
      for (let i = 0; i < items.length; i++) for (let j = i + 1; j < items.length; j++) {
        if (rows[i] !== rows[j]) continue;
        const a = items[i], b = items[j];
        assert.ok(a.end <= b.start || b.end <= a.start, `overlap in row ${rows[i]}`);
      }
      let depth = 0;
      for (const p of items.map((i) => i.start)) depth = Math.max(depth, items.filter((i) => i.start <= p && p < i.end).length);
      assert.equal(Math.max(...rows) + 1, depth);
    }
  });
});

describe('ticks', () => {
  for (const level of TL.zoomLevels) {
    test(`human-friendly UTC ticks at ${level.label}`, () => {
      const from = T - level.ms / 2;
      const to = T + level.ms / 2;
      const ts = TL.ticks(from, to, 1000);
      assert.ok(ts.length >= 3 && ts.length <= 12, `${ts.length} ticks`);
      for (let i = 0; i < ts.length; i++) {
        assert.ok(ts[i].at >= from && ts[i].at <= to);
        assert.ok(ts[i].x >= 0 && ts[i].x <= 1000);
        assert.ok(ts[i].label.length > 0);
        if (i) {
          assert.ok(ts[i].x - ts[i - 1].x >= 85, `spacing ${ts[i].x - ts[i - 1].x}`);
          assert.notEqual(ts[i].label, ts[i - 1].label);
        }
      }
    });
  }

  test('labels follow the step: seconds, minutes, days, months', () => {
    const sec = TL.ticks(T - 30 * SECOND, T + 30 * SECOND, 1000);
    assert.ok(sec.every((t) => /^\d\d:\d\d:\d\d$/.test(t.label)), sec.map((t) => t.label).join());
    assert.ok(sec.every((t) => t.at % (10 * SECOND) === 0));
    const hour = TL.ticks(T - 3 * HOUR, T + 3 * HOUR, 1000);
    assert.ok(hour.every((t) => /^\d\d:\d\d$|^\d\d-\d\d 00:00$/.test(t.label)));
    const week = TL.ticks(T - 3.5 * DAY, T + 3.5 * DAY, 1000);
    assert.ok(week.every((t) => /^\d{4}-\d\d-\d\d$/.test(t.label) && t.at % DAY === 0));
    const months = TL.ticks(T - 91 * DAY, T + 91 * DAY, 1000);
    assert.ok(months.every((t) => /^\d{4}-\d\d$/.test(t.label) && new Date(t.at).getUTCDate() === 1));
    assert.ok(months.some((t) => t.label === '2027-01'));
  });

  test('week steps start on Monday; midnight names the day', () => {
    const ws = TL.ticks(T - 15 * DAY, T + 15 * DAY, 1000);
    assert.equal(TL.tickStep(T - 15 * DAY, T + 15 * DAY, 1000).unit, 'w');
    assert.ok(ws.length > 0 && ws.every((t) => new Date(t.at).getUTCDay() === 1 && t.at % DAY === 0));
    const hs = TL.ticks(Date.UTC(2026, 11, 2, 20), Date.UTC(2026, 11, 3, 4), 1000);
    assert.ok(hs.some((t) => t.label === '12-03 00:00'));
  });
});

describe('zoom and pan', () => {
  const view = { from: T - HOUR, to: T + HOUR };

  test('zoom keeps the anchor in place', () => {
    const anchor = T + 30 * MINUTE;
    const z = TL.zoom(view, 0.5, anchor);
    assert.equal(z.to - z.from, HOUR);
    const f = (anchor - view.from) / (view.to - view.from);
    assert.ok(Math.abs((anchor - z.from) / (z.to - z.from) - f) < 1e-6);
  });

  test('zoom is bounded: never narrower than 1 minute nor wider than 1 year', () => {
    const narrow = TL.zoom(view, 1e-9);
    assert.equal(narrow.to - narrow.from, TL.MIN_SPAN);
    assert.equal(TL.MIN_SPAN, MINUTE);
    const wide = TL.zoom(view, 1e9);
    assert.equal(wide.to - wide.from, TL.MAX_SPAN);
    assert.equal(TL.MAX_SPAN, 365 * DAY);
    assert.equal(TL.centreOn(T, 1).to - TL.centreOn(T, 1).from, MINUTE);
  });

  test('zoom to a level by object or id; stepping walks the levels', () => {
    assert.equal(TL.zoom(view, TL.zoomLevels[4]).to - TL.zoom(view, TL.zoomLevels[4]).from, DAY);
    const w = TL.zoom(view, '1w');
    assert.equal(w.to - w.from, 7 * DAY);
    assert.equal(TL.stepLevel(view, -1).id, '1h');
    assert.equal(TL.stepLevel(view, 1).id, '6h');
    assert.equal(TL.stepLevel({ from: 0, to: MINUTE }, -1).id, '1m');
    assert.equal(TL.stepLevel({ from: 0, to: 182 * DAY }, 1).id, '6mo');
    assert.equal(TL.currentLevel({ from: 0, to: 6 * HOUR }).id, '6h');
    assert.equal(TL.currentLevel({ from: 0, to: 5 * HOUR }), null);
  });

  test('pan moves by a fraction of the span; centreOn puts now at 2/3', () => {
    const p = TL.pan(view, -0.25);
    assert.deepEqual(p, { from: view.from - 30 * MINUTE, to: view.to - 30 * MINUTE });
    const c = TL.centreOn(T, 3 * HOUR);
    assert.equal(T - c.from, 2 * HOUR);
    assert.equal(c.to - T, HOUR);
  });

  test('the default zoom fits the active key’s life and three rotations', () => {
    assert.equal(TL.defaultLevel(fastTimeline()).id, '1m');
    assert.equal(TL.defaultLevel(dailyTimeline()).id, '1w');
    // No keys yet: from the policy. "every 2h": 3 periods = 6 h fit 6 h; "every 3h": 9 h need 1 d.
    const policy = (schedule) => ({ policy: { schedule, publish_ahead_seconds: 600, retention_seconds: 7200 }, lanes: [] });
    assert.equal(TL.defaultLevel(policy('every 2h')).id, '6h');
    assert.equal(TL.defaultLevel(policy('every 3h')).id, '1d');
    // A cron schedule without keys falls back to a daily period.
    assert.equal(TL.defaultLevel(policy('0 0 3 * * *')).id, '1w');
  });
});

describe('describeKey', () => {
  test('names the key, its state and its instants with times', () => {
    const tl = fastTimeline();
    const L = TL.layout(tl, { from: T - 10 * SECOND, to: T + 10 * SECOND }, 1000, { now: T });
    const a = L.lanes[0].bars.find((b) => b.kid === 'A');
    const text = TL.describeKey(a, T);
    assert.match(text, /^Key A, ES256, retiring/);
    assert.match(text, /Activated 2026-12-02 16:59:56Z \(4 s ago\)/);
    assert.match(text, /Retires at 2026-12-02 17:00:07Z \(in 7 s\)/);
    const d = TL.describeKey(tl.lanes[0].keys.find((k) => k.kid === 'D'), T);
    assert.match(d, /revoked/);
    assert.match(d, /Revoked 2026-12-02 16:59:45Z/);
  });
});

describe('parseMetrics', () => {
  const text = [
    '# HELP jwksd_published_keys Keys in the JWK Set.',
    '# TYPE jwksd_published_keys gauge',
    'jwksd_published_keys{alg="ES256",state="active"} 1',
    'jwksd_published_keys{alg="ES256",state="next"} 1',
    'jwksd_published_keys{alg="RS256",state="active"} 2',
    'jwksd_lifecycle_failing 0',
    'weird{path="C:\\\\dir",msg="say \\"hi\\"\\nbye",} 3.5 1700000000000',
    'jwksd_next_rotation_seconds{alg="ES256"} -7.5e2',
    'inf_metric +Inf',
    'nan_metric NaN',
    'jwksd_sign_requests_total{result="ok"} 10 # {trace_id="abc"} 1.0',
    'broken{unterminated="x 1',
    'no_value',
    '# EOF',
  ].join('\n');
  const m = TL.parseMetrics(text);

  test('samples with labels, comments skipped', () => {
    assert.equal(m.get('jwksd_published_keys').length, 3);
    assert.deepEqual(m.get('jwksd_published_keys')[2], { labels: { alg: 'RS256', state: 'active' }, value: 2 });
    assert.deepEqual(m.get('jwksd_lifecycle_failing'), [{ labels: {}, value: 0 }]);
    assert.equal(m.get('jwksd_next_rotation_seconds')[0].value, -750);
    assert.equal(m.get('jwksd_sign_requests_total')[0].value, 10);
  });

  test('escaped quotes, backslashes and newlines in label values; timestamp ignored', () => {
    const w = m.get('weird')[0];
    assert.equal(w.labels.msg, 'say "hi"\nbye');
    assert.equal(w.labels.path, 'C:\\dir');
    assert.equal(w.value, 3.5);
  });

  test('special values and malformed lines', () => {
    assert.equal(m.get('inf_metric')[0].value, Infinity);
    assert.ok(Number.isNaN(m.get('nan_metric')[0].value));
    assert.equal(m.has('broken'), false);
    assert.equal(m.has('no_value'), false);
    assert.equal(TL.parseMetrics('').size, 0);
  });
});

describe('evaluateWatches', () => {
  const W = (id) => TL.WATCHES.find((w) => w.id === id);
  const one = (id, prev, cur) => TL.evaluateWatches(prev && TL.parseMetrics(prev), cur == null ? null : TL.parseMetrics(cur), [W(id)])[0];

  test('the watch list is data naming the runbook alerts', () => {
    for (const w of TL.WATCHES) {
      assert.match(w.name, /^jwksd_/);
      assert.match(w.alert, /^Jwksd[A-Z]/);
      assert.ok(w.kind === 'gauge' || w.kind === 'counter');
      if (w.kind === 'counter') assert.match(w.name, /_total$/);
    }
    assert.equal(TL.watchSelector(W('sign_errors')), 'jwksd_sign_requests_total{result=~"error|unavailable"}');
  });

  test('lifecycle failing fires at 1, is ok at 0, not reported when absent', () => {
    assert.equal(one('lifecycle_failing', null, 'jwksd_lifecycle_failing 1').status, 'firing');
    assert.equal(one('lifecycle_failing', null, 'jwksd_lifecycle_failing 0').status, 'ok');
    const absent = one('lifecycle_failing', null, 'other 1');
    assert.equal(absent.status, 'absent');
    assert.equal(absent.value, null);
    assert.equal(one('lifecycle_failing', null, null).status, 'absent');
  });

  test('the key-count watches judge the configured algorithms only', () => {
    const text = 'jwksd_published_keys{alg="ES256",state="active"} 1\njwksd_published_keys{alg="ES384",state="active"} 0';
    const all = TL.evaluateWatches(null, TL.parseMetrics(text), [W('active_keys')])[0];
    assert.equal(all.status, 'firing');
    const configured = TL.evaluateWatches(null, TL.parseMetrics(text), [W('active_keys')], { algorithms: ['ES256'] })[0];
    assert.equal(configured.status, 'ok');
    assert.deepEqual(configured.groups.map((g) => g.group), ['ES256']);
  });

  test('rotation overdue per algorithm', () => {
    const r = one('rotation_overdue', null, 'jwksd_next_rotation_seconds{alg="ES256"} 30\njwksd_next_rotation_seconds{alg="RS256"} -700');
    assert.equal(r.status, 'firing');
    assert.deepEqual(r.groups.map((g) => [g.group, g.status]), [['ES256', 'ok'], ['RS256', 'firing']]);
  });

  test('exactly one active key per algorithm; published keys summed per algorithm', () => {
    const cur = 'jwksd_published_keys{alg="ES256",state="active"} 1\njwksd_published_keys{alg="ES256",state="next"} 1\njwksd_published_keys{alg="RS256",state="active"} 2\njwksd_published_keys{alg="RS256",state="retiring"} 3';
    const a = one('active_keys', null, cur);
    assert.equal(a.status, 'firing');
    assert.deepEqual(a.groups.map((g) => [g.group, g.value, g.status]), [['ES256', 1, 'ok'], ['RS256', 2, 'firing']]);
    const p = one('published_keys', null, cur);
    assert.equal(p.status, 'info');
    assert.deepEqual(p.groups.map((g) => [g.group, g.value]), [['ES256', 2], ['RS256', 5]]);
    assert.equal(one('active_keys', null, 'jwksd_published_keys{alg="ES256",state="active"} 1').status, 'ok');
  });

  test('counter increases over the observed window warn; no increase is ok', () => {
    const prev = 'jwksd_admin_auth_failures_total{status="401"} 3\njwksd_admin_auth_failures_total{status="429"} 1';
    const cur = 'jwksd_admin_auth_failures_total{status="401"} 5\njwksd_admin_auth_failures_total{status="429"} 1';
    const all = one('admin_auth_failures', prev, cur);
    assert.equal(all.status, 'warning');
    assert.equal(all.value, 2);
    assert.equal(all.total, 6);
    const limited = one('admin_rate_limited', prev, cur);
    assert.equal(limited.status, 'ok');
    assert.equal(limited.value, 0);
    assert.equal(one('admin_rate_limited', prev, cur.replace('429"} 1', '429"} 4')).value, 3);
  });

  test('the first sample shows totals without judging an increase', () => {
    const r = one('token_errors', null, 'jwksd_token_errors_total{kind="login"} 9');
    assert.equal(r.status, 'ok');
    assert.equal(r.value, 0);
    assert.equal(r.baseline, false);
  });

  test('regex filter, new series counted whole, resets counted from zero', () => {
    const prev = 'jwksd_sign_requests_total{result="ok"} 100\njwksd_sign_requests_total{result="error"} 5';
    const cur = 'jwksd_sign_requests_total{result="ok"} 200\njwksd_sign_requests_total{result="error"} 2\njwksd_sign_requests_total{result="unavailable"} 1\njwksd_sign_requests_total{result="errors"} 50';
    const r = one('sign_errors', prev, cur);
    assert.equal(r.value, 3); // error reset 5 -> 2 counts 2, unavailable new counts 1; "errors" and "ok" do not match
    assert.equal(r.status, 'warning');
  });

  test('failed webhook deliveries, audit write failures, clients reloads', () => {
    assert.equal(one('webhook_failing', 'jwksd_webhook_deliveries_total{endpoint="a",result="failed"} 1', 'jwksd_webhook_deliveries_total{endpoint="a",result="failed"} 1\njwksd_webhook_deliveries_total{endpoint="a",result="ok"} 9').status, 'ok');
    assert.equal(one('audit_write_failures', 'jwksd_audit_write_failures_total 0', 'jwksd_audit_write_failures_total 1').status, 'warning');
    assert.equal(one('clients_reload_failed', 'jwksd_clients_reloads_total{result="ok"} 1', 'jwksd_clients_reloads_total{result="ok"} 2').status, 'absent');
  });

  test('clock offset warns when not zero; leader is shown', () => {
    assert.equal(one('clock_offset', null, 'jwksd_clock_offset_seconds 0.5').status, 'warning');
    assert.equal(one('clock_offset', null, 'jwksd_clock_offset_seconds 0').status, 'ok');
    const l = one('leader', null, 'jwksd_leader 1');
    assert.equal(l.status, 'info');
    assert.equal(l.value, 1);
  });

  test('matchLabels: exact and anchored regex', () => {
    assert.equal(TL.matchLabels({ result: 'error' }, { result: { re: 'error|unavailable' } }), true);
    assert.equal(TL.matchLabels({ result: 'errorx' }, { result: { re: 'error|unavailable' } }), false);
    assert.equal(TL.matchLabels({ a: '1' }, { a: '1', b: '' }), true);
    assert.equal(TL.matchLabels({ a: '1' }, { a: '2' }), false);
  });
});

describe('metric history', () => {
  test('keeps 5 minutes (plus the sample at the edge) and picks the oldest in the window as baseline', () => {
    let h = [];
    for (let i = 0; i <= 40; i++) h = TL.recordSample(h, { at: i * 10 * SECOND, metrics: i }, 5 * MINUTE);
    // now = 400 s: samples from 100 s on are kept.
    assert.equal(h[0].at, 100 * SECOND);
    assert.equal(h.at(-1).at, 400 * SECOND);
    const base = TL.baselineSample(h, 400 * SECOND, 5 * MINUTE);
    assert.equal(base.at, 100 * SECOND);
    assert.equal(TL.baselineSample([{ at: 5, metrics: 1 }], 5), null);
  });
});
