// Drives a real headless Chromium through the node's web UI (run by fabric/tests/ui.rs, which
// starts the fabric and passes what it expects in the environment):
//
//   NEXUS_UI_ADMIN            admin URL of the node under test (http://127.0.0.1:PORT)
//   NEXUS_UI_TOKEN            a management token (the node's admin_token)
//   NEXUS_UI_READ_TOKEN       a token with only `read`
//   NEXUS_UI_OPERATOR_TOKEN   a token with only `operator` (no `read`)
//   NEXUS_UI_EXPECT           JSON: { members: [names], services: [ids], intent: {...},
//                             first: id, excluded: id, session_peer: name }
//   NEXUS_UI_SCREENSHOTS      optional: a directory to write one PNG per page into
//   NEXUS_CHROMIUM            optional: the browser (default /usr/bin/chromium)
//
// Every check prints `ok - …`; the first failure prints `FAIL - …` and exits 1. After sign-in,
// every page must load without a console error, a failed request or an HTTP error status.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`FAIL - environment variable ${name} is not set (run through fabric/tests/ui.rs)`);
    process.exit(2);
  }
  return value;
};

const ADMIN = env('NEXUS_UI_ADMIN');
const TOKEN = env('NEXUS_UI_TOKEN');
const READ_TOKEN = env('NEXUS_UI_READ_TOKEN');
const OPERATOR_TOKEN = env('NEXUS_UI_OPERATOR_TOKEN');
const EXPECT = JSON.parse(env('NEXUS_UI_EXPECT'));
const SHOTS = process.env.NEXUS_UI_SCREENSHOTS || '';
const BROWSER = process.env.NEXUS_CHROMIUM || '/usr/bin/chromium';
const TIME_LIMIT_MS = 50_000;

let passed = 0;

class CheckFailed extends Error {}

function ok(what) {
  passed += 1;
  console.log(`ok - ${what}`);
}

function expect(condition, what, detail = '') {
  if (!condition) throw new CheckFailed(`${what}${detail ? `: ${detail}` : ''}`);
  ok(what);
}

function same(actual, wanted, what) {
  const a = JSON.stringify(actual);
  const w = JSON.stringify(wanted);
  expect(a === w, what, `got ${a}, wanted ${w}`);
}

async function api(method, apiPath, token, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(`${ADMIN}${apiPath}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json();
  if (!response.ok) throw new CheckFailed(`${method} ${apiPath}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

/**
 * A fresh tab (its own sessionStorage) that records console errors, page errors, failed
 * requests and HTTP error statuses. `allowed` lists statuses the scenario expects.
 */
async function openTab(context, allowed = []) {
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  const problems = [];
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const text = message.text();
    const expected = allowed.some((status) => text.includes(`status of ${status}`));
    if (!expected) problems.push(`console error: ${text}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('requestfailed', (request) => problems.push(`request failed: ${request.method()} ${request.url()} ${request.failure()?.errorText}`));
  page.on('response', (response) => {
    if (response.status() >= 400 && !allowed.includes(response.status())) {
      problems.push(`HTTP ${response.status()}: ${response.request().method()} ${response.url()}`);
    }
  });
  return { page, problems };
}

async function shot(page, name) {
  if (!SHOTS) return;
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function signIn(page, token) {
  await page.goto(`${ADMIN}/ui`);
  await page.waitForSelector('#login-form');
  await page.fill('#token', token);
  await page.click('#sign-in');
}

/** Opens a page of the UI and waits until it has rendered. */
async function visit(page, name) {
  await page.evaluate((hash) => {
    location.hash = hash;
  }, `#/${name}`);
  await page.waitForSelector(`main[data-page="${name}"]:not([aria-busy])`);
}

async function attr(page, selector, name) {
  return page.$$eval(selector, (els, n) => els.map((el) => el.getAttribute(n)), name);
}

async function anonymous(context) {
  const { page, problems } = await openTab(context, [401]);
  await page.goto(`${ADMIN}/ui`);
  await page.waitForSelector('#login-form');
  ok('ACLs on and no token: the UI shows the login form');
  await shot(page, 'login');
  await page.fill('#token', 'f'.repeat(64));
  await page.click('#sign-in');
  const error = await page.waitForSelector('#login-error');
  expect((await error.textContent()).includes('refused'), 'an unknown token is refused with a message on the login form');
  same(problems, [], 'the login flow has no errors but the expected 401s');
  await page.close();
}

async function management(context) {
  const { page, problems } = await openTab(context, [401]);
  await signIn(page, TOKEN);
  await page.waitForSelector('main[data-page="members"]:not([aria-busy])');
  // The 401 of the first probe (no token yet) is expected; from here on nothing may fail.
  problems.length = 0;
  const who = await page.textContent('#who');
  expect(who.includes('management'), 'the nav bar names the token and its scope', who);

  // Members.
  const names = (await attr(page, '#members tbody tr[data-name]', 'data-name')).sort();
  same(names, [...EXPECT.members].sort(), 'members: every member is listed by name');
  const states = await attr(page, '#members tbody tr[data-name]', 'data-state');
  expect(states.every((s) => s === 'alive'), 'members: every member is alive', states.join(','));
  const aliveBadge = await page.$eval('#members .badge.ok', (el) => getComputedStyle(el).backgroundColor);
  expect(aliveBadge !== 'rgba(0, 0, 0, 0)', 'members: states are coloured', aliveBadge);
  await shot(page, 'members');

  // Services.
  await visit(page, 'services');
  const services = [...new Set(await attr(page, '#services tbody tr[data-service]', 'data-service'))].sort();
  same(services, [...EXPECT.services].sort(), 'services: every registered service id is listed');
  await shot(page, 'services');

  // Resolve playground: the same ranking as the API.
  await visit(page, 'resolve');
  const intent = EXPECT.intent;
  await page.fill('#f-task', intent.task);
  await page.fill('#f-k', String(intent.k));
  await page.fill('#f-min_context', String(intent.min_context));
  if (!(await page.isChecked('#f-explain'))) await page.check('#f-explain');
  await page.click('#resolve-submit');
  await page.waitForSelector('#resolve-results');
  const ranked = await attr(page, '#resolve-results tbody tr[data-service]', 'data-service');
  const answer = await api('POST', '/v1/resolve', TOKEN, { ...intent, explain: true });
  same(ranked, answer.candidates.map((c) => c.id), 'resolve: the UI ranks as POST /v1/resolve does');
  expect(ranked[0] === EXPECT.first, `resolve: ${EXPECT.first} is first`, ranked.join(','));
  const excluded = await attr(page, '#resolve-excluded tbody tr[data-service]', 'data-service');
  expect(excluded.includes(EXPECT.excluded), `resolve: the explain lists ${EXPECT.excluded} as excluded`, excluded.join(','));
  const why = await page.textContent('#resolve-results tbody tr');
  expect(why.includes('latency'), 'resolve: each candidate shows why (score terms)', why);
  await shot(page, 'resolve');

  // Routing: the FIB and the intent route the resolve just compiled.
  await visit(page, 'routing');
  const intentKeys = await attr(page, '#intent-routes tbody tr[data-key]', 'data-key');
  expect(intentKeys.includes(answer.routing_key), 'routing: the resolved intent class has an intent route', intentKeys.join(','));
  // The FIB changes as the fabric does (member and session routes), so the check is for the
  // entry the resolve installed rather than for the whole table at one instant.
  const fibKeys = await attr(page, '#fib tbody tr[data-key]', 'data-key');
  expect(fibKeys.includes(answer.routing_key), "routing: the FIB shows the intent's entry", fibKeys.join(','));
  await shot(page, 'routing');

  // Sessions.
  await visit(page, 'sessions');
  const peers = await attr(page, '#sessions tbody tr[data-peer]', 'data-peer');
  expect(peers.includes(EXPECT.session_peer), `sessions: the session to ${EXPECT.session_peer} is listed`, peers.join(','));
  await shot(page, 'sessions');

  // Overlay graph.
  await visit(page, 'overlay');
  const drawn = (await attr(page, '#overlay-graph g.node', 'data-name')).sort();
  same(drawn, [...EXPECT.members].sort(), 'overlay: the graph draws every member');
  const edges = await page.$$eval('#overlay-graph line.edge.active[data-to]', (els) => els.length);
  const overlay = await api('GET', '/v1/overlay', TOKEN);
  same(edges, overlay.active.length, 'overlay: one active edge per active-view peer');
  await shot(page, 'overlay');

  // CA: issue and revoke through the UI.
  await visit(page, 'ca');
  const before = await attr(page, '#certs tbody tr[data-serial]', 'data-serial');
  expect(before.length >= EXPECT.members.length, 'ca: the node certificates are listed', before.join(','));
  await shot(page, 'ca');
  await page.selectOption('#i-kind', 'agent');
  await page.click('#random-key');
  await page.fill('#i-publisher', 'ui-test.example');
  await page.fill('#i-claims', 'name=ui-test');
  await page.click('#issue-submit');
  const issued = await page.waitForSelector('#issued');
  const serial = (await issued.textContent()).match(/serial (\d+)/)?.[1];
  expect(serial !== undefined, 'ca: the issue button issues a certificate', await issued.textContent());
  await page.waitForSelector(`#certs tr[data-serial="${serial}"][data-revoked="no"]`);
  ok('ca: the new certificate is listed');
  await page.click(`button[data-revoke="${serial}"]`);
  await page.waitForSelector('#revoke-dialog[open]');
  await page.selectOption('#revoke-reason', 'superseded');
  await page.click('#revoke-confirm');
  await page.waitForSelector('#revoked');
  await page.waitForSelector(`#certs tr[data-serial="${serial}"][data-revoked="yes"]`);
  await page.waitForSelector(`#revocations tr[data-serial="${serial}"]`);
  const record = await api('GET', `/v1/ca/certs/${serial}`, TOKEN);
  expect(record.revocation?.reason === 'superseded', 'ca: the revoke button revoked it (the API agrees)', JSON.stringify(record.revocation));

  same(problems, [], 'management token: no console error, failed request or HTTP error on any page');
  await page.close();
}

async function readOnly(context) {
  const { page, problems } = await openTab(context, [401]);
  await signIn(page, READ_TOKEN);
  await page.waitForSelector('main[data-page="members"]:not([aria-busy])');
  problems.length = 0;
  await visit(page, 'ca');
  expect((await page.$('#issue-form')) === null, 'read-only token: no issue form');
  expect((await page.$('button[data-revoke]')) === null, 'read-only token: no revoke buttons');
  const missing = await attr(page, '[data-missing-scope]', 'data-missing-scope');
  same(missing.sort(), ['ca:issue', 'ca:revoke'], 'read-only token: the CA page names the scopes it lacks');
  await shot(page, 'ca-read-only');
  same(problems, [], 'read-only token: no console error, failed request or HTTP error');
  await page.close();
}

/** A page that offered the issue form goes on with a token that lacks ca:issue: the API says 403. */
async function staleAction(context) {
  const { page, problems } = await openTab(context, [401, 403]);
  await signIn(page, TOKEN);
  await page.waitForSelector('main[data-page="members"]:not([aria-busy])');
  await visit(page, 'ca');
  const count = (await api('GET', '/v1/ca/status', TOKEN)).mics;
  await page.evaluate((token) => sessionStorage.setItem('nexus.ui.token', token), READ_TOKEN);
  await page.click('#random-key');
  await page.fill('#i-publisher', 'ui-test.example');
  await page.click('#issue-submit');
  const panel = await page.waitForSelector('#forbidden');
  const text = await panel.textContent();
  expect(text.includes('forbidden: this token lacks scope ca:issue'), 'issuing with a read-only token shows the 403 panel naming ca:issue', text);
  same((await api('GET', '/v1/ca/status', TOKEN)).mics, count, 'the refused issue issued nothing');
  const unexpected = problems.filter((p) => !p.includes('403') && !p.includes('401'));
  same(unexpected, [], 'the refused action causes no other error');
  await page.close();
}

async function withoutRead(context) {
  const { page, problems } = await openTab(context, [401, 403]);
  await signIn(page, OPERATOR_TOKEN);
  const panel = await page.waitForSelector('#forbidden');
  const text = await panel.textContent();
  expect(text.includes('forbidden: this token lacks scope read'), 'a token without read sees the 403 panel naming read', text);
  await shot(page, 'forbidden');
  const unexpected = problems.filter((p) => !p.includes('403') && !p.includes('401'));
  same(unexpected, [], 'the forbidden page causes no other error');
  await page.close();
}

async function main() {
  if (SHOTS) fs.mkdirSync(SHOTS, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'nexus-ui-chromium-'));
  let context;
  const timer = setTimeout(() => {
    console.error(`FAIL - the browser checks did not finish within ${TIME_LIMIT_MS} ms`);
    process.exit(1);
  }, TIME_LIMIT_MS);
  let failed = false;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: BROWSER,
      headless: true,
      viewport: { width: 1280, height: 800 },
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
    await anonymous(context);
    await management(context);
    await readOnly(context);
    await staleAction(context);
    await withoutRead(context);
    console.log(`ui: all ${passed} checks passed`);
  } catch (error) {
    failed = true;
    console.error(`FAIL - ${error instanceof CheckFailed ? error.message : error.stack || error}`);
  } finally {
    clearTimeout(timer);
    if (context) await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
  process.exit(failed ? 1 : 0);
}

main();
