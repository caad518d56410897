// The Nexus node's web UI: one ES module, no dependencies, no build step.
//
// Everything shown comes from the node's admin API, fetched with the user's token (kept in
// this tab's sessionStorage and sent as `Authorization: Bearer`). The API enforces the scopes;
// the UI only reflects them: it reads each operation's scope from the OpenAPI document
// (`x-nexus-scope`) and the token's scopes from `GET /v1/token/self`, shows an action only
// when the token may use it, shows the login form on 401 and a "forbidden" panel naming the
// missing scope on 403. Pages are chosen by the URL fragment (`/ui#/services`). DOM nodes are
// built with h(), never parsed from HTML text, so no API value can inject markup.

const TOKEN_KEY = 'nexus.ui.token';
const SVG_NS = 'http://www.w3.org/2000/svg';
const CERTS_PAGE = 100;
const REVOCATIONS_PAGE = 1000;

const main = document.getElementById('main');
const who = document.getElementById('who');

/** What the UI knows about its user: the token's identity and this node. */
let session = null;
/** The router table (method, path, scope) from the OpenAPI document; open, so loaded first. */
let routeScopes = null;
/** A message to show at the top of the next page rendered (after an action). */
let flash = null;
/** Increases with every render, so a slow page does not overwrite a newer one. */
let renderSeq = 0;

// ---------------------------------------------------------------------------------------------
// DOM helpers

/** Element `tag` with attributes (`class`, `on*` handlers, others as attributes) and children. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  el.append(...flat(children));
  return el;
}

/** An SVG element. */
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  el.append(...flat(children));
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.setAttribute('class', value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
}

function flat(children) {
  return children
    .flat(Infinity)
    .filter((c) => c !== undefined && c !== null && c !== false)
    .map((c) => (c instanceof Node ? c : String(c)));
}

/** A table: `columns` are `{ title, cell(row), cls }`; `rowAttrs(row)` adds attributes. */
function table(id, columns, rows, { rowAttrs = () => ({}), empty = 'None.' } = {}) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { id },
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.cls }, c.title)))),
      h(
        'tbody',
        {},
        rows.length === 0
          ? h('tr', { class: 'empty' }, h('td', { colspan: columns.length }, empty))
          : rows.map((row) =>
              h('tr', rowAttrs(row), columns.map((c) => h('td', { class: c.cls }, c.cell(row)))),
            ),
      ),
    ),
  );
}

function badge(text, tone) {
  return h('span', { class: `badge ${tone}` }, text);
}

function chips(items, tone = '') {
  return h('span', { class: 'chips' }, items.map((t) => h('span', { class: `chip ${tone}` }, t)));
}

function mono(text, title) {
  return h('span', { class: 'mono', title }, text);
}

/** A short hex id with the whole id as its tooltip. */
function shortHex(hex, n = 12) {
  if (!hex) return dash();
  return mono(hex.length > n ? `${hex.slice(0, n)}…` : hex, hex);
}

function dash() {
  return h('span', { class: 'muted' }, '—');
}

/** Label/value pairs as a definition grid. */
function facts(id, pairs) {
  return h(
    'dl',
    { class: 'facts', id },
    pairs.map(([label, value]) => [h('dt', {}, label), h('dd', {}, value ?? dash())]),
  );
}

function section(title, ...content) {
  return h('section', { class: 'card' }, h('h2', {}, title), ...content);
}

/** The page's title row: title, a line of context, and a refresh button. */
function pageHead(title, subtitle, ...actions) {
  return h(
    'div',
    { class: 'page-head' },
    h('div', {}, h('h1', {}, title), subtitle ? h('p', { class: 'muted' }, subtitle) : null),
    h(
      'div',
      { class: 'actions' },
      ...actions,
      h('button', { type: 'button', class: 'secondary', onclick: () => render() }, 'Refresh'),
    ),
  );
}

function stat(label, value, tone = '') {
  return h('div', { class: `stat ${tone}` }, h('div', { class: 'stat-value' }, value), h('div', { class: 'stat-label' }, label));
}

// ---------------------------------------------------------------------------------------------
// Formatting

const intFmt = new Intl.NumberFormat('en-US');

function int(n) {
  return typeof n === 'bigint' ? n.toString() : intFmt.format(n);
}

function orDash(value, show = (v) => v) {
  return value === undefined || value === null || value === '' || value === 0 ? dash() : show(value);
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function duration(seconds) {
  const d = Math.floor(seconds / 86400);
  const hh = Math.floor((seconds % 86400) / 3600);
  const mm = Math.floor((seconds % 3600) / 60);
  const ss = seconds % 60;
  if (d > 0) return `${d}d ${hh}h`;
  if (hh > 0) return `${hh}h ${mm}m`;
  if (mm > 0) return `${mm}m ${ss}s`;
  return `${ss}s`;
}

function utc(ms) {
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

const STATE_TONE = { alive: 'ok', suspect: 'warn', down: 'bad', left: 'off' };

function stateBadge(state) {
  return badge(state, STATE_TONE[state] || 'off');
}

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(method, path, status, problem) {
    super(`${method} ${path}: ${status} ${problem.title || ''} ${problem.detail || ''}`);
    this.method = method;
    this.path = path;
    this.status = status;
    this.problem = problem;
  }
}

/** JSON with integers beyond 2^53 (u64 Raft ids) kept exact, as BigInt. */
function parseJson(text) {
  return JSON.parse(text, (key, value, context) =>
    typeof value === 'number' &&
    !Number.isSafeInteger(value) &&
    Number.isInteger(value) &&
    context &&
    typeof context.source === 'string' &&
    /^-?\d+$/.test(context.source)
      ? BigInt(context.source)
      : value,
  );
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = parseJson(text);
    } catch {
      data = { title: 'Unreadable answer', detail: text.slice(0, 500) };
    }
  }
  if (!response.ok) throw new ApiError(method, path, response.status, data || {});
  return data;
}

/** The router table as the OpenAPI document states it: method, path segments, scope. */
function scopeTable(doc) {
  const rows = [];
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const [method, op] of Object.entries(item)) {
      if (op && typeof op === 'object' && op['x-nexus-scope']) {
        rows.push({ method: method.toUpperCase(), segs: path.split('/'), scope: op['x-nexus-scope'] });
      }
    }
  }
  // Literal paths before templated ones, so `/v1/node/mic` wins over a `{…}` segment.
  const templated = (r) => r.segs.filter((x) => x.startsWith('{')).length;
  return rows.sort((a, b) => templated(a) - templated(b));
}

/** The scope `method path` needs (`open`, a scope name, or null if the API has no such route). */
function scopeOf(method, path) {
  const segs = path.split('?')[0].split('/');
  const row = routeScopes?.find(
    (r) =>
      r.method === method &&
      r.segs.length === segs.length &&
      r.segs.every((x, i) => x.startsWith('{') || x === segs[i]),
  );
  return row ? row.scope : null;
}

/** Whether the token holds `scope` (with ACLs off every request is allowed). */
function holds(scope) {
  const me = session?.me;
  if (!me || !me.acl || scope === 'open') return true;
  return me.scopes.includes('management') || me.scopes.includes(scope);
}

/** Whether the token may call `method path`, as the router table says. */
function may(method, path) {
  const scope = scopeOf(method, path);
  return scope !== null && holds(scope);
}

// ---------------------------------------------------------------------------------------------
// Login, session and errors

async function startSession() {
  if (!routeScopes) routeScopes = scopeTable(await api('GET', '/v1/openapi.json'));
  const me = await api('GET', '/v1/token/self');
  const node = await api('GET', '/v1/node');
  session = { me, node };
  document.title = `Nexus · ${node.name}`;
  showWho();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  session = null;
  showWho();
  render();
}

function showWho() {
  if (!session) {
    who.replaceChildren();
    return;
  }
  const { me, node } = session;
  const token = me.acl
    ? h(
        'span',
        { class: 'token', title: `accessor ${me.accessor}` },
        me.description || (me.accessor === 'bootstrap' ? 'bootstrap token' : shortAccessor(me.accessor)),
        ' ',
        chips(me.scopes, 'light'),
      )
    : h('span', { class: 'token' }, badge('ACLs off', 'warn'));
  who.replaceChildren(
    h('span', { class: 'node-name', title: node.id }, node.name),
    token,
    me.acl ? h('button', { type: 'button', class: 'link', id: 'sign-out', onclick: signOut }, 'Sign out') : null,
  );
}

function shortAccessor(accessor) {
  return accessor && accessor.length > 8 ? `${accessor.slice(0, 8)}…` : accessor;
}

function showLogin(message) {
  session = null;
  showWho();
  setActiveNav(null);
  const input = h('input', {
    type: 'password',
    id: 'token',
    name: 'token',
    autocomplete: 'off',
    spellcheck: 'false',
    placeholder: 'ACL token secret',
    required: true,
  });
  const form = h(
    'form',
    {
      id: 'login-form',
      class: 'card login',
      onsubmit: (event) => {
        event.preventDefault();
        sessionStorage.setItem(TOKEN_KEY, input.value.trim());
        render();
      },
    },
    h('h1', {}, 'Sign in'),
    h(
      'p',
      { class: 'muted' },
      'This node checks ACL tokens. Enter a token secret (the node\'s admin token, or one made with ',
      mono('nexus ctl acl token create'),
      '). It is kept in this tab only and sent with every request.',
    ),
    message ? h('p', { class: 'alert bad', id: 'login-error' }, message) : null,
    h('label', { for: 'token' }, 'Token'),
    input,
    h('button', { type: 'submit', id: 'sign-in' }, 'Sign in'),
  );
  main.replaceChildren(form);
  input.focus();
}

/** The panel for a refused or failed request. */
function showError(error) {
  if (!(error instanceof ApiError)) {
    main.replaceChildren(
      h('div', { class: 'card', id: 'error' }, h('h1', {}, 'Error'), h('p', {}, String(error?.message || error))),
    );
    return;
  }
  if (error.status === 401) {
    const hadToken = sessionStorage.getItem(TOKEN_KEY);
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(hadToken ? `The node refused this token: ${error.problem.detail || 'unauthorized'}` : null);
    return;
  }
  if (error.status === 403) {
    const scope = scopeOf(error.method, error.path);
    main.replaceChildren(
      h(
        'div',
        { class: 'card forbidden', id: 'forbidden' },
        h('h1', {}, 'Forbidden'),
        h(
          'p',
          { class: 'lead' },
          'forbidden: this token lacks scope ',
          h('strong', { class: 'scope' }, scope || 'needed here'),
        ),
        h('p', { class: 'detail' }, error.problem.detail || `${error.method} ${error.path.split('?')[0]} was refused.`),
        h('p', {}, 'Ask an operator for a token with that scope, or ', h('button', { type: 'button', class: 'link', onclick: signOut }, 'sign in with another token'), '.'),
      ),
    );
    return;
  }
  main.replaceChildren(
    h(
      'div',
      { class: 'card', id: 'error' },
      h('h1', {}, error.problem.title || `Error ${error.status}`),
      h('p', {}, `${error.method} ${error.path} answered ${error.status}.`),
      h('p', { class: 'muted' }, error.problem.detail || ''),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Pages

async function membersPage() {
  const [node, list] = await Promise.all([api('GET', '/v1/node'), api('GET', '/v1/members')]);
  const members = list.members;
  const count = (state) => members.filter((m) => m.state === state).length;
  return [
    pageHead('Members', `The fabric's membership as ${node.name} sees it (SWIM).`),
    h(
      'div',
      { class: 'stats' },
      stat('alive', count('alive'), 'ok'),
      stat('suspect', count('suspect'), count('suspect') ? 'warn' : ''),
      stat('down', count('down'), count('down') ? 'bad' : ''),
      stat('left', count('left')),
    ),
    section(
      'Members',
      table(
        'members',
        [
          { title: 'Name', cell: (m) => [h('strong', {}, m.name), m.local ? badge('this node', 'info') : null] },
          { title: 'State', cell: (m) => stateBadge(m.state) },
          { title: 'Roles', cell: (m) => (m.meta.roles.length ? chips(m.meta.roles) : dash()) },
          { title: 'Gossip address', cell: (m) => mono(m.addr) },
          { title: 'Admin', cell: (m) => orDash(m.meta.admin, mono) },
          { title: 'Data plane', cell: (m) => orDash(m.meta.dataplane, mono) },
          { title: 'Incarnation', cell: (m) => int(m.incarnation), cls: 'num' },
          { title: 'Version', cell: (m) => m.meta.version },
          { title: 'Node ID', cell: (m) => shortHex(m.id) },
        ],
        members,
        { rowAttrs: (m) => ({ 'data-name': m.name, 'data-state': m.state }) },
      ),
    ),
    section(
      'This node',
      facts('node', [
        ['Name', node.name],
        ['Node ID', mono(node.id)],
        ['State', stateBadge(node.state)],
        ['Version', node.version],
        ['Uptime', duration(node.uptime_s)],
        ['Incarnation', int(node.incarnation)],
        ['Roles', node.roles.length ? chips(node.roles) : dash()],
        ['Gossip', mono(node.addr)],
        ['Admin API', mono(node.admin)],
        ['Data plane', orDash(node.dataplane, mono)],
        ['NexAPI', orDash(node.api, mono)],
        ['Gateway', orDash(node.gateway, mono)],
        ['Data directory', mono(node.data_dir)],
      ]),
    ),
  ];
}

function loadBar(pct) {
  const tone = pct >= 90 ? 'bad' : pct >= 70 ? 'warn' : 'ok';
  const fill = h('span', { class: `fill ${tone}` });
  fill.style.width = `${Math.max(0, Math.min(100, pct))}%`;
  return h('span', { class: 'load' }, h('span', { class: 'bar' }, fill), h('span', { class: 'num' }, `${pct}%`));
}

async function servicesPage() {
  const list = await api('GET', '/v1/services');
  const services = list.services
    .slice()
    .sort((a, b) => a.service.id.localeCompare(b.service.id) || (a.node_name || '').localeCompare(b.node_name || ''));
  const nodes = new Set(services.map((x) => x.node));
  const tasks = new Set(services.flatMap((x) => x.service.tasks));
  return [
    pageHead('Services', 'Every advert this node holds: the capability registry, fabric-wide.'),
    h('div', { class: 'stats' }, stat('services', services.length), stat('nodes', nodes.size), stat('tasks', tasks.size)),
    section(
      'Adverts',
      table(
        'services',
        [
          { title: 'Service', cell: (x) => [h('strong', {}, x.service.id), x.local ? badge('local', 'info') : null], cls: 'nowrap' },
          { title: 'Node', cell: (x) => x.node_name || shortHex(x.node), cls: 'nowrap' },
          { title: 'Tasks', cell: (x) => chips(x.service.tasks) },
          { title: 'Model', cell: (x) => orDash(x.service.model_family), cls: 'nowrap' },
          { title: 'Context', cell: (x) => orDash(x.service.context_window, int), cls: 'num' },
          {
            title: 'Latency p50 / p99',
            cell: (x) => `${x.service.latency_ms_p50 || '—'} / ${x.service.latency_ms_p99 || '—'} ms`,
            cls: 'num',
          },
          { title: 'Price (µ/1k)', cell: (x) => orDash(x.service.price_micros_per_1k, int), cls: 'num' },
          {
            title: 'Region',
            cell: (x) => orDash([x.service.region, x.service.zone].filter(Boolean).join(' / ')),
            cls: 'nowrap',
          },
          {
            title: 'Load (queue)',
            cell: (x) => [loadBar(x.service.load.utilization_pct), h('span', { class: 'muted queue' }, ` (${int(x.service.load.queue_depth)})`)],
            cls: 'nowrap',
          },
          { title: 'MIC', cell: (x) => orDash(x.service.trust.mic_serial, (v) => badge(`#${v}`, 'info')) },
          { title: 'Lease', cell: (x) => duration(Math.round(x.expires_in_ms / 1000)), cls: 'num' },
        ],
        services,
        { rowAttrs: (x) => ({ 'data-service': x.service.id, 'data-node': x.node_name || x.node }), empty: 'No service is registered.' },
      ),
    ),
  ];
}

/** The resolve form's values, kept between visits. */
const resolveState = {
  task: '',
  k: '3',
  min_context: '',
  max_latency_ms: '',
  max_latency_p99_ms: '',
  max_price_micros_per_1k: '',
  region: '',
  model_family: '',
  modalities: '',
  publishers: '',
  require_mic: false,
  explain: true,
  latency: '1',
  load: '1',
  price: '0.5',
  proximity: '0.5',
  result: null,
  intent: null,
};

function intentFromForm() {
  const st = resolveState;
  const intent = { task: st.task.trim(), k: Number(st.k) };
  for (const key of ['min_context', 'max_latency_ms', 'max_latency_p99_ms', 'max_price_micros_per_1k']) {
    if (String(st[key]).trim() !== '') intent[key] = Number(st[key]);
  }
  for (const key of ['region', 'model_family']) {
    if (st[key].trim() !== '') intent[key] = st[key].trim();
  }
  for (const key of ['modalities', 'publishers']) {
    const list = st[key].split(',').map((x) => x.trim()).filter(Boolean);
    if (list.length) intent[key] = list;
  }
  if (st.require_mic) intent.require_mic = true;
  intent.prefer = {
    latency: Number(st.latency),
    load: Number(st.load),
    price: Number(st.price),
    proximity: Number(st.proximity),
  };
  intent.explain = st.explain;
  return intent;
}

function field(label, name, attrs = {}) {
  const input = h('input', { id: `f-${name}`, name, value: resolveState[name], ...attrs });
  input.addEventListener('input', () => {
    resolveState[name] = input.value;
  });
  return h('div', { class: 'field' }, h('label', { for: `f-${name}` }, label), input);
}

function checkbox(label, name) {
  const input = h('input', { type: 'checkbox', id: `f-${name}`, name, checked: resolveState[name] });
  input.addEventListener('change', () => {
    resolveState[name] = input.checked;
  });
  return h('div', { class: 'field check' }, input, h('label', { for: `f-${name}` }, label));
}

async function resolvePage() {
  const [list] = await Promise.all([api('GET', '/v1/services'), loadNames()]);
  // Known tasks, the most offered first (the form's default).
  const offered = new Map();
  for (const task of list.services.flatMap((x) => x.service.tasks)) offered.set(task, (offered.get(task) || 0) + 1);
  const tasks = [...offered.keys()].sort((a, b) => offered.get(b) - offered.get(a) || a.localeCompare(b));
  if (!resolveState.task && tasks.length) resolveState.task = tasks[0];
  const results = h('div', { id: 'resolve-output' });
  const showResult = () => {
    results.replaceChildren(...resolveResult(resolveState.result, resolveState.intent));
  };
  const form = h(
    'form',
    {
      id: 'resolve-form',
      class: 'card intent',
      onsubmit: async (event) => {
        event.preventDefault();
        const intent = intentFromForm();
        const button = form.querySelector('button[type=submit]');
        button.disabled = true;
        try {
          resolveState.result = await api('POST', '/v1/resolve', intent);
          resolveState.intent = intent;
          showResult();
        } catch (error) {
          if (error instanceof ApiError && error.status >= 400 && error.status < 500 && error.status !== 401 && error.status !== 403) {
            results.replaceChildren(
              h('div', { class: 'alert bad', id: 'resolve-error' }, `${error.problem.title || 'Refused'}: ${error.problem.detail || ''}`),
            );
          } else {
            showError(error);
          }
        } finally {
          button.disabled = false;
        }
      },
    },
    h('h2', {}, 'Intent'),
    h('datalist', { id: 'known-tasks' }, tasks.map((t) => h('option', { value: t }))),
    h(
      'div',
      { class: 'grid' },
      field('Task', 'task', { list: 'known-tasks', required: true, placeholder: 'llm.code' }),
      field('k (candidates)', 'k', { type: 'number', min: 1, max: 64, required: true }),
    ),
    h('h3', {}, 'Constraints'),
    h(
      'div',
      { class: 'grid' },
      field('Min context (tokens)', 'min_context', { type: 'number', min: 0, placeholder: 'any' }),
      field('Max p50 latency (ms)', 'max_latency_ms', { type: 'number', min: 0, placeholder: 'any' }),
      field('Max p99 latency (ms)', 'max_latency_p99_ms', { type: 'number', min: 0, placeholder: 'any' }),
      field('Max price (µ/1k)', 'max_price_micros_per_1k', { type: 'number', min: 0, placeholder: 'any' }),
      field('Region', 'region', { placeholder: 'any' }),
      field('Model family', 'model_family', { placeholder: 'any' }),
      field('Modalities', 'modalities', { placeholder: 'text, image' }),
      field('Publishers', 'publishers', { placeholder: 'any' }),
      checkbox('Require a verified MIC', 'require_mic'),
    ),
    h('h3', {}, 'Preferences (weights)'),
    h(
      'div',
      { class: 'grid' },
      field('Latency', 'latency', { type: 'number', min: 0, step: 'any' }),
      field('Load', 'load', { type: 'number', min: 0, step: 'any' }),
      field('Price', 'price', { type: 'number', min: 0, step: 'any' }),
      field('Proximity', 'proximity', { type: 'number', min: 0, step: 'any' }),
    ),
    h('div', { class: 'form-actions' }, checkbox('Explain', 'explain'), h('button', { type: 'submit', id: 'resolve-submit' }, 'Resolve')),
  );
  showResult();
  return [
    pageHead('Resolve', `Try an intent against ${session.node.name}'s registry (POST /v1/resolve).`),
    h('div', { class: 'split' }, form, results),
  ];
}

function resolveResult(result, intent) {
  if (!result) {
    return [h('div', { class: 'card muted placeholder' }, 'Ranked endpoints appear here.')];
  }
  const best = result.candidates.length ? Math.max(...result.candidates.map((c) => c.score)) : 1;
  const scoreCell = (c) => {
    const fill = h('span', { class: 'fill info' });
    fill.style.width = `${best > 0 ? Math.max(2, (100 * c.score) / best) : 0}%`;
    return h('span', { class: 'load' }, h('span', { class: 'bar' }, fill), h('span', { class: 'num' }, c.score.toFixed(3)));
  };
  const out = [
    section(
      'Ranked endpoints',
      h(
        'p',
        { class: 'muted' },
        `${result.candidates.length} of ${result.considered} considered · routing key `,
        mono(result.routing_key),
      ),
      table(
        'resolve-results',
        [
          { title: '#', cell: (c) => String(result.candidates.indexOf(c) + 1), cls: 'num' },
          { title: 'Service', cell: (c) => h('strong', {}, c.id), cls: 'nowrap' },
          { title: 'Node', cell: (c) => c.node_name || shortHex(c.node), cls: 'nowrap' },
          { title: 'Score', cell: scoreCell },
          {
            title: 'Endpoint',
            cell: (c) => mono(`${c.endpoint.node_addr || shortHex(c.endpoint.node)} · port ${c.endpoint.port} · stream ${c.endpoint.stream}`),
          },
          { title: 'Why', cell: (c) => (c.why.length ? h('ul', { class: 'why' }, c.why.map((w) => h('li', {}, w))) : dash()) },
        ],
        result.candidates,
        { rowAttrs: (c) => ({ 'data-service': c.id }), empty: 'No service satisfies this intent.' },
      ),
    ),
  ];
  if (result.excluded) {
    out.push(
      section(
        'Excluded',
        table(
          'resolve-excluded',
          [
            { title: 'Service', cell: (e) => e.id },
            { title: 'Node', cell: (e) => nodeName(e.node) },
            { title: 'Reason', cell: (e) => e.reason },
          ],
          result.excluded,
          { rowAttrs: (e) => ({ 'data-service': e.id }), empty: 'Nothing was excluded.' },
        ),
      ),
    );
  }
  out.push(h('details', { class: 'card' }, h('summary', {}, 'Request body'), h('pre', {}, JSON.stringify(intent, null, 2))));
  return out;
}

/** Node id → name, from the last member list a page loaded. */
let names = new Map();

function nodeName(id) {
  const name = names.get(id);
  return name ? h('span', { title: id }, name) : shortHex(id);
}

async function loadNames() {
  const list = await api('GET', '/v1/members');
  names = new Map(list.members.map((m) => [m.id, m.name]));
  return list.members;
}

function hops(list) {
  return h(
    'ul',
    { class: 'hops' },
    list.map((hop) =>
      h(
        'li',
        {},
        nodeName(hop.node),
        ' ',
        mono(hop.addr),
        ' ',
        badge(`w ${hop.weight}`, 'off'),
        hop.rewrite ? [' → ', shortHex(hop.rewrite, 10)] : null,
      ),
    ),
  );
}

async function routingPage() {
  const [fib, routes, intents] = await Promise.all([
    api('GET', '/v1/fib'),
    api('GET', '/v1/routes'),
    api('GET', '/v1/intent-routes'),
    loadNames(),
  ]);
  return [
    pageHead('Routing', "This node's forwarding table, its static routes and the routes compiled for resolved intents."),
    h(
      'div',
      { class: 'stats' },
      stat('FIB generation', int(fib.generation)),
      stat('FIB entries', int(fib.entries.length)),
      stat('static routes', int(routes.routes.length)),
      stat('intent routes', int(intents.routes.length)),
    ),
    section(
      'Forwarding table (FIB)',
      h(
        'p',
        { class: 'muted' },
        `Generation ${fib.generation}`,
        fib.previous_generation != null ? ` (previous ${fib.previous_generation})` : '',
        ` · ${fib.routes} routes installed; first ${fib.entries.length} shown.`,
      ),
      table(
        'fib',
        [
          { title: 'Routing key', cell: (e) => mono(e.key) },
          { title: 'Next hops', cell: (e) => hops(e.next_hops) },
        ],
        fib.entries,
        { rowAttrs: (e) => ({ 'data-key': e.key }), empty: 'The table is empty.' },
      ),
    ),
    section(
      'Intent routes',
      h('p', { class: 'muted' }, `Version ${intents.version}: one weighted group per intent class resolved here.`),
      table(
        'intent-routes',
        [
          { title: 'Routing key', cell: (r) => mono(r.key) },
          { title: 'Class', cell: (r) => h('code', { class: 'class' }, r.class) },
          {
            title: 'Services',
            cell: (r) =>
              h(
                'ul',
                { class: 'hops' },
                r.hops.map((x) => h('li', {}, h('strong', {}, x.service), ' on ', nodeName(x.node), ` :${x.port} `, badge(`w ${x.weight}`, 'off'))),
              ),
          },
        ],
        intents.routes,
        { rowAttrs: (r) => ({ 'data-key': r.key }), empty: 'No intent has been resolved on this node yet.' },
      ),
    ),
    section(
      'Static routes',
      table(
        'static-routes',
        [
          { title: 'Routing key', cell: (r) => mono(r.key) },
          { title: 'Next hops', cell: (r) => hops(r.next_hops) },
          { title: 'Live', cell: (r) => badge(`${r.live} / ${r.next_hops.length}`, r.live ? 'ok' : 'bad'), cls: 'num' },
        ],
        routes.routes,
        { empty: 'No static route is set.' },
      ),
    ),
  ];
}

async function sessionsPage() {
  const list = await api('GET', '/v1/sessions');
  const sessions = list.sessions;
  const modes = (x) =>
    h(
      'span',
      { class: 'chips' },
      Object.entries(x.modes)
        .filter(([, c]) => c.sent || c.delivered)
        .map(([mode, c]) => h('span', { class: 'chip', title: `${c.sent} sent, ${c.delivered} delivered, ${c.dropped_send + c.dropped_recv} dropped` }, `${mode} ${c.sent}/${c.delivered}`)),
    );
  return [
    pageHead('Sessions', 'NexStream sessions from this node to its peers (MIC-authenticated QUIC).'),
    h(
      'div',
      { class: 'stats' },
      stat('sessions', sessions.length),
      stat('established', sessions.filter((x) => x.established).length, 'ok'),
    ),
    section(
      'Sessions',
      table(
        'sessions',
        [
          { title: 'Peer', cell: (x) => (x.peer_name ? h('strong', { title: x.peer }, x.peer_name) : shortHex(x.peer)) },
          { title: 'State', cell: (x) => (x.established ? badge('established', 'ok') : badge('handshake', 'warn')) },
          { title: 'Side', cell: (x) => (x.client ? 'client' : 'server') },
          { title: 'Peer MIC', cell: (x) => orDash(x.mic_serial, (v) => badge(`#${v}`, 'info')) },
          { title: 'RTT', cell: (x) => `${(x.rtt_us / 1000).toFixed(2)} ms`, cls: 'num' },
          { title: 'cwnd', cell: (x) => bytes(x.cwnd_bytes), cls: 'num' },
          { title: 'Sent', cell: (x) => bytes(x.bytes_sent), cls: 'num' },
          { title: 'Received', cell: (x) => bytes(x.bytes_received), cls: 'num' },
          { title: 'Packets lost', cell: (x) => `${x.packets_lost} / ${x.packets_sent}`, cls: 'num' },
          { title: 'Idle', cell: (x) => `${(x.idle_ms / 1000).toFixed(1)} s`, cls: 'num' },
          { title: 'Messages (sent/delivered)', cell: modes },
        ],
        sessions,
        { rowAttrs: (x) => ({ 'data-peer': x.peer_name || x.peer || '' }), empty: 'No session is open.' },
      ),
    ),
  ];
}

const REVOCATION_REASONS = ['unspecified', 'key_compromise', 'superseded', 'cessation_of_operation', 'privilege_withdrawn'];

function certStatus(cert, revocation, now) {
  if (revocation) return badge(`revoked: ${revocation.reason.replaceAll('_', ' ')}`, 'bad');
  if (now > cert.mic.body.not_after_ms) return badge('expired', 'off');
  if (now < cert.mic.body.not_before_ms) return badge('not yet valid', 'warn');
  return badge('valid', 'ok');
}

function randomHex(bytes) {
  const buf = new Uint8Array(bytes);
  crypto.getRandomValues(buf);
  return [...buf].map((b) => b.toString(16).padStart(2, '0')).join('');
}

function issueForm() {
  const input = (name, attrs = {}) => h('input', { id: `i-${name}`, name, ...attrs });
  const kind = h('select', { id: 'i-kind', name: 'kind' }, ['agent', 'model', 'node'].map((k) => h('option', { value: k }, k)));
  const key = input('subject_key', { required: true, pattern: '[0-9a-fA-F]{64}', placeholder: '64 hex digits', class: 'mono' });
  const arch = input('arch_hash', { pattern: '[0-9a-fA-F]{64}', placeholder: '64 hex digits', class: 'mono' });
  const weights = input('weights_commitment', { pattern: '[0-9a-fA-F]{64}', placeholder: '64 hex digits', class: 'mono' });
  const modelFields = h(
    'div',
    { class: 'grid wide', id: 'model-fields', hidden: true },
    h('div', { class: 'field' }, h('label', { for: 'i-arch_hash' }, 'Architecture hash'), arch),
    h('div', { class: 'field' }, h('label', { for: 'i-weights_commitment' }, 'Weights commitment'), weights),
  );
  kind.addEventListener('change', () => {
    modelFields.hidden = kind.value !== 'model';
    arch.required = weights.required = kind.value === 'model';
  });
  const publisher = input('publisher', { required: true, placeholder: 'example.org' });
  const validity = input('validity_h', { type: 'number', min: 1, value: 24, required: true });
  const claims = h('textarea', { id: 'i-claims', name: 'claims', rows: 2, placeholder: 'key=value, one per line' });
  const status = h('div', { id: 'issue-status' });
  const form = h(
    'form',
    {
      id: 'issue-form',
      onsubmit: async (event) => {
        event.preventDefault();
        const body = {
          kind: kind.value,
          subject_key: key.value.trim().toLowerCase(),
          publisher: publisher.value.trim(),
          validity_ms: Math.round(Number(validity.value) * 3600 * 1000),
          claims: claims.value
            .split('\n')
            .map((line) => line.trim())
            .filter(Boolean)
            .map((line) => {
              const at = line.indexOf('=');
              return at < 0 ? { key: line, value: '' } : { key: line.slice(0, at).trim(), value: line.slice(at + 1).trim() };
            }),
        };
        if (kind.value === 'model') {
          body.model = { arch_hash: arch.value.trim().toLowerCase(), weights_commitment: weights.value.trim().toLowerCase() };
        }
        try {
          const issued = await api('POST', '/v1/ca/certs', body);
          flash = { tone: 'ok', text: `Issued certificate serial ${issued.serial} (${issued.fingerprint}).`, id: 'issued' };
          render();
        } catch (error) {
          actionFailed(error, status);
        }
      },
    },
    h(
      'div',
      { class: 'grid' },
      h('div', { class: 'field' }, h('label', { for: 'i-kind' }, 'Kind'), kind),
      h('div', { class: 'field' }, h('label', { for: 'i-publisher' }, 'Publisher'), publisher),
      h('div', { class: 'field' }, h('label', { for: 'i-validity_h' }, 'Validity (hours)'), validity),
    ),
    h(
      'div',
      { class: 'field' },
      h('label', { for: 'i-subject_key' }, 'Subject public key (Ed25519)'),
      h(
        'div',
        { class: 'inline' },
        key,
        h(
          'button',
          {
            type: 'button',
            class: 'secondary',
            id: 'random-key',
            title: 'Random bytes: for trying the CA out, not a key anyone holds',
            onclick: () => {
              key.value = randomHex(32);
              if (kind.value === 'model') {
                arch.value = randomHex(32);
                weights.value = randomHex(32);
              }
            },
          },
          'Random',
        ),
      ),
    ),
    modelFields,
    h('div', { class: 'field' }, h('label', { for: 'i-claims' }, 'Claims'), claims),
    h('div', { class: 'form-actions' }, h('button', { type: 'submit', id: 'issue-submit' }, 'Issue certificate')),
    status,
  );
  return form;
}

/** An action the API refused: 401 and 403 take the page, other problems show in place. */
function actionFailed(error, where) {
  if (error instanceof ApiError && error.status !== 401 && error.status !== 403) {
    where.replaceChildren(h('p', { class: 'alert bad' }, `${error.problem.title || 'Failed'}: ${error.problem.detail || error.status}`));
  } else {
    showError(error);
  }
}

function revokeDialog() {
  const reason = h('select', { id: 'revoke-reason' }, REVOCATION_REASONS.map((r) => h('option', { value: r }, r.replaceAll('_', ' '))));
  const title = h('h2', {}, 'Revoke');
  const status = h('div');
  const dialog = h(
    'dialog',
    { id: 'revoke-dialog' },
    h(
      'form',
      {
        onsubmit: async (event) => {
          event.preventDefault();
          const serial = dialog.dataset.serial;
          try {
            await api('POST', `/v1/ca/certs/${serial}/revoke`, { reason: reason.value });
            dialog.close();
            flash = { tone: 'ok', text: `Revoked certificate serial ${serial} (${reason.value.replaceAll('_', ' ')}); the revocation spreads to every node.`, id: 'revoked' };
            render();
          } catch (error) {
            dialog.close();
            actionFailed(error, status);
          }
        },
      },
      title,
      h('p', {}, 'Revocation is permanent: every node stops trusting the certificate.'),
      h('div', { class: 'field' }, h('label', { for: 'revoke-reason' }, 'Reason'), reason),
      h(
        'div',
        { class: 'form-actions' },
        h('button', { type: 'button', class: 'secondary', onclick: () => dialog.close() }, 'Cancel'),
        h('button', { type: 'submit', class: 'danger', id: 'revoke-confirm' }, 'Revoke'),
      ),
    ),
  );
  dialog.openFor = (serial) => {
    dialog.dataset.serial = serial;
    title.textContent = `Revoke certificate ${serial}`;
    reason.value = 'unspecified';
    dialog.showModal();
  };
  return [dialog, status];
}

async function caPage() {
  const [status, list, revocations] = await Promise.all([
    api('GET', '/v1/ca/status'),
    api('GET', `/v1/ca/certs?limit=${CERTS_PAGE}`),
    api('GET', `/v1/ca/revocations?limit=${REVOCATIONS_PAGE}`),
    loadNames(),
  ]);
  const now = Date.now();
  // The list does not carry revocations (only GET /v1/ca/certs/{serial} does): join them.
  const revokedBy = new Map(revocations.revocations.map((r) => [String(r.serial), r]));
  const revocationOf = (c) => c.revocation || revokedBy.get(String(c.serial)) || null;
  const canIssue = may('POST', '/v1/ca/certs');
  const canRevoke = may('POST', '/v1/ca/certs/1/revoke');
  const [dialog, revokeStatus] = revokeDialog();
  const raft = status.raft;
  const subject = (c) => {
    const name = c.mic.body.claims.find((x) => x.key === 'name');
    return name ? [h('strong', {}, name.value), ' ', shortHex(c.mic.body.subject_key, 10)] : shortHex(c.mic.body.subject_key);
  };
  const heldNote = (scope, what) =>
    h('p', { class: 'note', 'data-missing-scope': scope }, `${what} needs the scope `, h('strong', {}, scope), `; this token holds ${session.me.scopes.join(', ')}.`);
  return [
    pageHead('Certificate authority', 'NexTrust: the Raft-replicated CA, its certificates (MICs) and revocations.'),
    h(
      'div',
      { class: 'stats' },
      stat('bootstrapped', status.bootstrapped ? 'yes' : 'no', status.bootstrapped ? 'ok' : 'warn'),
      stat('certificates', status.mics != null ? int(status.mics) : '—'),
      stat('revocations', status.revocations != null ? int(status.revocations) : '—', status.revocations ? 'bad' : ''),
      stat('Raft term', int(raft.term)),
    ),
    section(
      'Status',
      facts('ca-status', [
        ['This node', status.voter ? badge('voter', 'info') : badge('client', 'off')],
        ['Raft role', badge(raft.role, raft.role === 'Leader' ? 'ok' : raft.role === 'Follower' ? 'info' : 'warn')],
        ['Raft id', mono(String(status.raft_id))],
        ['Leader', raft.leader != null ? [mono(String(raft.leader)), ' ', raft.leader_addr ? mono(`(${raft.leader_addr})`) : null] : badge('none', 'bad')],
        ['Voters', h('span', { class: 'chips' }, raft.voters.map((v) => h('span', { class: `chip ${v === raft.leader ? 'lead' : ''}`, title: v === raft.leader ? 'leader' : 'voter' }, String(v))))],
        ['Last log / applied', `${raft.last_log_index ?? '—'} / ${raft.last_applied_index ?? '—'}`],
        ['Next serial', status.next_serial != null ? int(status.next_serial) : dash()],
      ]),
    ),
    section(
      'Certificates',
      revokeStatus,
      canRevoke ? null : heldNote(scopeOf('POST', '/v1/ca/certs/1/revoke'), 'Revoking'),
      table(
        'certs',
        [
          { title: 'Serial', cell: (c) => h('strong', {}, String(c.serial)), cls: 'num' },
          { title: 'Kind', cell: (c) => c.mic.body.kind },
          { title: 'Subject', cell: subject },
          { title: 'Publisher', cell: (c) => c.mic.body.publisher },
          { title: 'Valid from', cell: (c) => utc(c.mic.body.not_before_ms) },
          { title: 'Valid until', cell: (c) => utc(c.mic.body.not_after_ms) },
          { title: 'Status', cell: (c) => certStatus(c, revocationOf(c), now) },
          {
            title: '',
            cell: (c) =>
              canRevoke && !revocationOf(c)
                ? h('button', { type: 'button', class: 'danger small', 'data-revoke': c.serial, onclick: () => dialog.openFor(c.serial) }, 'Revoke…')
                : null,
          },
        ],
        list.certs,
        { rowAttrs: (c) => ({ 'data-serial': c.serial, 'data-revoked': revocationOf(c) ? 'yes' : 'no' }), empty: 'No certificate has been issued.' },
      ),
      list.next_after != null ? h('p', { class: 'muted' }, `First ${list.certs.length} shown; more with nexus ctl ca list --after ${list.next_after}.`) : null,
    ),
    section('Issue a certificate', canIssue ? issueForm() : heldNote(scopeOf('POST', '/v1/ca/certs'), 'Issuing certificates')),
    section(
      'Revocations',
      table(
        'revocations',
        [
          { title: 'Serial', cell: (r) => h('strong', {}, String(r.serial)), cls: 'num' },
          { title: 'Reason', cell: (r) => badge(r.reason.replaceAll('_', ' '), 'bad') },
          { title: 'Revoked at', cell: (r) => utc(r.revoked_at_ms) },
          { title: 'Certificate valid until', cell: (r) => utc(r.not_after_ms) },
          { title: 'Sequence', cell: (r) => String(r.seq), cls: 'num' },
        ],
        revocations.revocations,
        { rowAttrs: (r) => ({ 'data-serial': r.serial }), empty: 'Nothing has been revoked.' },
      ),
      revocations.next_after != null
        ? h('p', { class: 'muted' }, `First ${revocations.revocations.length} shown; more with nexus ctl ca revocations.`)
        : null,
    ),
    dialog,
  ];
}

async function overlayPage() {
  const [overlay, members] = await Promise.all([api('GET', '/v1/overlay'), loadNames()]);
  const byAddr = new Map(members.map((m) => [m.addr, m]));
  const me = members.find((m) => m.local);
  const active = new Set(overlay.active);
  const passive = new Set(overlay.passive);
  // Peers: every member but this node, plus view entries membership does not list (yet).
  const peers = members.filter((m) => !m.local).map((m) => ({ addr: m.addr, name: m.name, state: m.state }));
  for (const addr of [...overlay.active, ...overlay.passive]) {
    if (!byAddr.has(addr)) peers.push({ addr, name: addr, state: 'unknown' });
  }
  peers.sort((a, b) => a.name.localeCompare(b.name));
  const view = (addr) => (active.has(addr) ? 'active' : passive.has(addr) ? 'passive' : 'none');

  const width = 720;
  const cx = width / 2;
  const cy = 230;
  const radius = 160;
  // Peers on a circle around this node; with two they sit left and right, never on the
  // vertical line where labels would cross the edges.
  const place = (i) => {
    const n = Math.max(1, peers.length);
    const angle = -Math.PI / 2 + (n > 1 ? Math.PI / n : 0) + (2 * Math.PI * i) / n;
    return [cx + radius * Math.cos(angle), cy + radius * Math.sin(angle)];
  };
  const nodeShape = (x, y, name, sub, state, extra) =>
    s(
      'g',
      { class: `node ${state}`, 'data-name': name, ...extra },
      s('circle', { cx: x, cy: y, r: 24 }),
      s('text', { x, y: y + 40, class: 'label' }, name),
      s('text', { x, y: y + 55, class: 'sub' }, sub),
    );
  const edges = [];
  const shapes = [];
  peers.forEach((peer, i) => {
    const [x, y] = place(i);
    const kind = view(peer.addr);
    if (kind !== 'none') edges.push(s('line', { x1: cx, y1: cy, x2: x, y2: y, class: `edge ${kind}`, 'data-to': peer.name }));
    shapes.push(nodeShape(x, y, peer.name, peer.addr, peer.state, { 'data-view': kind }));
  });
  shapes.push(nodeShape(cx, cy, me ? me.name : 'this node', me ? me.addr : '', 'self', { 'data-view': 'self' }));
  // The drawing's extent: the nodes with their labels, and room for the legend above them.
  const ys = [cy, ...peers.map((_, i) => place(i)[1])];
  const top = Math.min(...ys) - 90;
  const bottom = Math.max(...ys) + 70;
  const legend = s(
    'g',
    { class: 'legend', transform: `translate(16, ${top + 20})` },
    s('line', { x1: 0, y1: 0, x2: 28, y2: 0, class: 'edge active' }),
    s('text', { x: 36, y: 4 }, 'active view (overlay neighbour)'),
    s('line', { x1: 0, y1: 22, x2: 28, y2: 22, class: 'edge passive' }),
    s('text', { x: 36, y: 26 }, 'passive view (backup)'),
  );
  const graph = s(
    'svg',
    { id: 'overlay-graph', viewBox: `0 ${top} ${width} ${bottom - top}`, role: 'img', 'aria-label': 'Overlay views of this node' },
    legend,
    ...edges,
    ...shapes,
  );
  const coord = overlay.coordinate || {};
  const fmt = (v) => (typeof v === 'number' ? v.toPrecision(4) : '—');
  return [
    pageHead('Overlay', `The broadcast overlay (HyParView + Plumtree) from ${me ? me.name : 'this node'}: its active and passive views.`),
    h(
      'div',
      { class: 'stats' },
      stat('active view', overlay.active.length, 'info'),
      stat('passive view', overlay.passive.length),
      stat('members', members.length),
    ),
    section('Views', h('div', { class: 'graph' }, graph), h('p', { class: 'muted' }, "Each node keeps its own views; open another node's UI to see its neighbours.")),
    section(
      'Peers',
      table(
        'overlay-peers',
        [
          { title: 'Peer', cell: (p) => h('strong', {}, p.name) },
          { title: 'Gossip address', cell: (p) => mono(p.addr) },
          { title: 'View', cell: (p) => (view(p.addr) === 'none' ? dash() : badge(view(p.addr), view(p.addr) === 'active' ? 'info' : 'off')) },
          { title: 'Member state', cell: (p) => stateBadge(p.state) },
        ],
        peers,
        { rowAttrs: (p) => ({ 'data-name': p.name, 'data-view': view(p.addr) }), empty: 'No other member.' },
      ),
    ),
    section(
      'Vivaldi coordinate',
      facts('coordinate', [
        ['Vector', mono((coord.vec || []).map(fmt).join(', '))],
        ['Height', fmt(coord.height)],
        ['Error', fmt(coord.error)],
      ]),
    ),
  ];
}

const PAGES = {
  members: membersPage,
  services: servicesPage,
  resolve: resolvePage,
  routing: routingPage,
  sessions: sessionsPage,
  ca: caPage,
  overlay: overlayPage,
};

// ---------------------------------------------------------------------------------------------
// Router

function pageName() {
  return location.hash.replace(/^#\/?/, '').split(/[/?]/)[0] || 'members';
}

function setActiveNav(name) {
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.page === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

async function render() {
  const seq = ++renderSeq;
  const name = pageName();
  const page = PAGES[name];
  try {
    if (!session) await startSession();
    if (seq !== renderSeq) return;
    setActiveNav(page ? name : null);
    if (!page) {
      main.replaceChildren(
        h('div', { class: 'card', id: 'error' }, h('h1', {}, 'Not found'), h('p', {}, `The UI has no page “${name}”. `, h('a', { href: '#/members' }, 'Members'))),
      );
      return;
    }
    main.setAttribute('aria-busy', 'true');
    const content = await page();
    if (seq !== renderSeq) return;
    const note = flash ? h('p', { class: `alert ${flash.tone}`, id: flash.id }, flash.text) : null;
    flash = null;
    main.replaceChildren(...flat([note, content]));
    main.dataset.page = name;
  } catch (error) {
    if (seq === renderSeq) {
      delete main.dataset.page;
      showError(error);
    }
  } finally {
    if (seq === renderSeq) main.removeAttribute('aria-busy');
  }
}

window.addEventListener('hashchange', () => render());
render();
