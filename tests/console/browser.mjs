// Drives the operator console in Debian's Chromium with playwright-core
// against a running jwksd (tests/console.rs starts it and runs this):
// sign-in, the timeline against /v1/keys, live updates without a reload,
// rotate and revoke from the page with their audit records, CSRF and
// cross-origin refusals, sign-out, the keyboard and a narrow (200 % zoom)
// window. Prints "ok: <step>" per step; exits non-zero at the first
// failure. Screenshots go to $SCREENSHOTS.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import path from 'node:path';

const ADMIN = process.env.ADMIN_URL;
const PUBLIC = process.env.PUBLIC_URL;
const OPERATOR = process.env.OPERATOR_TOKEN;
const VIEWER = process.env.VIEWER_TOKEN;
const SHOTS = process.env.SCREENSHOTS;
const STEP_MS = 20000;

const ok = (step) => console.log(`ok: ${step}`);
const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, name), fullPage: true });

async function api(p, init = {}) {
  const r = await fetch(`${ADMIN}${p}`, {
    ...init,
    headers: { authorization: `Bearer ${OPERATOR}`, ...(init.headers || {}) },
  });
  return { status: r.status, body: await r.json().catch(() => null) };
}

const keys = async () => (await api('/v1/keys')).body;
const ms = (t) => (t ? String(Date.parse(t)) : null);

// Waits until `probe` returns a truthy value (or throws its last error).
async function until(what, probe, timeout = STEP_MS) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out: ${what}${last ? `: ${last.stack || last}` : ''}`);
}

// The bars the page draws: kid -> attributes.
async function bars(page) {
  return page.$$eval('#timeline .key-bar[data-kid]', (els) => {
    const out = {};
    for (const e of els) {
      const d = e.dataset;
      out[d.kid] = {
        state: d.state,
        published: d.published ?? null,
        activated: d.activated ?? null,
        deactivated: d.deactivated ?? null,
        retireAt: d.retireAt ?? null,
        ended: d.ended ?? null,
      };
    }
    return out;
  });
}

// Every published key of /v1/keys has its bar, in its state, with its
// instants, when the page and /v1/keys show the same version.
async function barsMatch(page) {
  const before = await keys();
  const drawn = await bars(page);
  const after = await keys();
  if (before.version !== after.version) return false;
  for (const k of after.keys) {
    if (!['next', 'active', 'retiring'].includes(k.state)) continue;
    const b = drawn[k.kid];
    if (!b) throw new Error(`no bar for ${k.state} key ${k.kid}`);
    assert.equal(b.state, k.state, `state of ${k.kid}`);
    assert.equal(b.published, ms(k.published_at), `published of ${k.kid}`);
    assert.equal(b.activated, ms(k.activated_at), `activated of ${k.kid}`);
    assert.equal(b.deactivated, ms(k.deactivated_at), `deactivated of ${k.kid}`);
    assert.equal(b.retireAt, ms(k.retire_at), `retire-at of ${k.kid}`);
  }
  return after;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // Without network: no background connections, no component updates.
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/401|403|409/.test(m.text())) errors.push(m.text());
  });

  // Sign-in: a wrong token is refused on the page, the right one signs in.
  await page.goto(`${ADMIN}/console/`);
  await page.waitForSelector('#signin-form');
  await page.fill('#token', 'not-a-token');
  await page.press('#token', 'Enter');
  await until('the sign-in error', async () => (await page.textContent('#signin-error'))?.trim());
  await page.fill('#token', OPERATOR);
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#timeline .key-bar[data-kid]');
  assert.equal(await page.inputValue('#token').catch(() => ''), '', 'the token field is cleared');
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'jwksd_console');
  assert.ok(session, 'a session cookie');
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, 'Strict');
  assert.equal(session.path, '/console/');
  assert.equal(await page.evaluate(() => document.cookie), '', 'the page cannot read it');
  assert.equal(await page.evaluate(() => localStorage.length + sessionStorage.length), 0);
  ok('signed in');

  // The timeline against /v1/keys.
  await until('the bars match /v1/keys', () => barsMatch(page));
  const lanes = await page.$$eval('#timeline .lane-label', (els) => els.length);
  assert.ok(lanes >= 2, `a lane per algorithm (${lanes})`);
  await shot(page, 'timeline.png');
  ok('bars match /v1/keys');

  // Live: a scheduled rotation shows without a reload.
  await page.evaluate(() => {
    window.__notReloaded = true;
  });
  const seen = new Set(Object.keys(await bars(page)));
  const updated = Number(await page.getAttribute('#timeline', 'data-updated'));
  await until('a new key on the page', async () => {
    const now = Object.keys(await bars(page));
    return now.some((k) => !seen.has(k));
  });
  assert.ok(Number(await page.getAttribute('#timeline', 'data-updated')) > updated);
  assert.equal(await page.evaluate(() => window.__notReloaded), true, 'no reload');
  await until('the events list', async () => (await page.$$('#events li[data-seq]')).length > 0);
  await until('the bars match again', () => barsMatch(page));
  ok('updated live');

  // Rotate from the page: the dialog says when it is safe; confirm.
  const before = await keys();
  const activeBefore = before.keys.find((k) => k.alg === 'ES256' && k.state === 'active').kid;
  await page.click('[data-rotate-alg="ES256"]');
  await page.waitForSelector('#rotate-dialog[open]');
  const rotateText = await page.textContent('#rotate-dialog');
  assert.match(rotateText, /safe/i, 'the dialog says when a rotation is safe');
  await shot(page, 'rotate-dialog.png');
  // Forcing is offered only when it is unsafe; force either way so the
  // rotation cannot be refused as too early.
  if (await page.isVisible('#rotate-force')) await page.check('#rotate-force');
  await page.click('#rotate-confirm');
  await until('the rotation result', async () => (await page.textContent('#action-result'))?.trim());
  await until('the rotation audit record', async () =>
    page.$('#action-audit li[data-seq]'),
  );
  const audit = await page.textContent('#action-audit');
  assert.match(audit, /key\.active/, audit);
  assert.match(audit, /operator/, audit);
  await until('ES256 rotated', async () => {
    const k = await keys();
    return k.keys.find((x) => x.kid === activeBefore)?.state !== 'active';
  });
  ok('rotated');

  // Revoke a retiring key from its bar: the dialog says which tokens stop
  // verifying and when verifiers drop it; the kid must be typed.
  const k = await keys();
  const victim = k.keys.find((x) => x.alg === 'ES256' && x.state === 'retiring');
  assert.ok(victim, 'a retiring key');
  await page.locator(`#timeline .key-bar[data-kid="${victim.kid}"]`).first().focus();
  await page.keyboard.press('Enter');
  await page.click('#revoke-open');
  await page.waitForSelector('#revoke-dialog[open]');
  const revokeText = await page.textContent('#revoke-dialog');
  assert.match(revokeText, /stop verifying/i, revokeText);
  assert.match(revokeText, /Cache-Control|max-age|cache/i, revokeText);
  assert.ok(await page.isDisabled('#revoke-confirm'), 'confirm waits for the kid');
  await page.fill('#revoke-confirm-kid', victim.kid);
  await shot(page, 'revoke-dialog.png');
  const revokedAt = Date.now();
  await page.click('#revoke-confirm');
  // Watched at every frame: the time from the click to the redrawn bar.
  await page.waitForFunction(
    (kid) => {
      const e = document.querySelector(`#timeline .key-bar[data-kid="${kid}"]`);
      return !e || e.dataset.state === 'revoked';
    },
    victim.kid,
    { polling: 'raf', timeout: STEP_MS },
  );
  console.log(`measure: revoke confirmed to its bar redrawn: ${Date.now() - revokedAt} ms`);
  await until('revoked in /v1/keys', async () =>
    (await keys()).keys.some((x) => x.kid === victim.kid && x.state === 'revoked'),
  );
  await until('the revocation audit record', async () =>
    /key\.revoked/.test((await page.textContent('#action-audit')) || ''),
  );
  const t0 = Date.now();
  const size = await page.evaluate(async () => (await (await fetch('api/timeline', { headers: { 'X-Console-Background': '1' } })).text()).length);
  console.log(`measure: GET api/timeline: ${Date.now() - t0} ms, ${size} bytes`);
  ok('revoked');
  // What docs/console.md and the README show: the first screen, after a
  // few rotations, a forced one and a revocation.
  await page.click('#zoom-now');
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(SHOTS, 'overview.png') });

  // From the page itself: a change without the CSRF token is refused.
  const noCsrf = await page.evaluate(async () => {
    const r = await fetch('api/rotate', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    return { status: r.status, body: await r.json() };
  });
  assert.equal(noCsrf.status, 403);
  assert.equal(noCsrf.body.code, 'csrf');
  ok('csrf refused');

  // From another origin (the public listener: same site, other port, so
  // the SameSite=Strict cookie goes along): the Origin check refuses it.
  const crossOriginAt = Date.now();
  const other = await context.newPage();
  await other.goto(`${PUBLIC}/healthz`);
  await other.evaluate(async (admin) => {
    await fetch(`${admin}/console/api/rotate`, {
      method: 'POST',
      mode: 'no-cors',
      credentials: 'include',
      headers: { 'content-type': 'text/plain' },
      body: '{"force":true}',
    }).catch(() => null);
  }, ADMIN);
  await new Promise((r) => setTimeout(r, 500));
  const after = await keys();
  // Scheduled rotations go on; no operator's rotation happened.
  const byHand = after.keys.filter((x) =>
    x.transitions.some(
      (t) => ['manual', 'forced'].includes(t.trigger) && Date.parse(t.at) > crossOriginAt - 100,
    ),
  );
  assert.equal(byHand.length, 0, 'no rotation from another origin');
  await other.close();
  ok('cross-origin refused');

  // Narrow (what 200 % zoom makes of a 1280 px window): no page-wide
  // horizontal scrolling; the keyboard reaches the controls.
  await page.setViewportSize({ width: 640, height: 900 });
  await page.waitForTimeout(300);
  const overflow = await page.evaluate(
    () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
  );
  assert.ok(overflow <= 1, `horizontal overflow of ${overflow} px at 640 px`);
  await shot(page, 'narrow.png');
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.focus('#zoom-in');
  await page.keyboard.press('Enter');
  await page.keyboard.press('Tab');
  const focused = await page.evaluate(() => document.activeElement?.id || document.activeElement?.tagName);
  assert.ok(focused && focused !== 'BODY', 'Tab moves focus on');

  // A viewer sees the timeline and no actions.
  const viewerContext = await browser.newContext();
  const vpage = await viewerContext.newPage();
  await vpage.goto(`${ADMIN}/console/`);
  await vpage.fill('#token', VIEWER);
  await vpage.click('#signin-form button[type=submit]');
  await vpage.waitForSelector('#timeline .key-bar[data-kid]');
  const visibleRotate = await vpage.$$eval('[data-rotate-alg]', (els) =>
    els.filter((e) => e.offsetParent !== null && !e.disabled).length,
  );
  assert.equal(visibleRotate, 0, 'no rotate buttons for a viewer');
  await viewerContext.close();

  // Sign out: back to the sign-in form; the session is gone.
  await page.click('#signout');
  await page.waitForSelector('#signin-form', { state: 'visible' });
  const gone = await page.evaluate(async () => (await fetch('api/timeline')).status);
  assert.equal(gone, 401);
  ok('signed out');

  assert.deepEqual(errors, [], 'no script errors on the page');
} finally {
  await browser.close();
}
