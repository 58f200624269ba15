// The console's shell: sign-in, the role, the navigation and the router
// (location hash). Each page is a module whose default export renders into
// an element and stops its work when the page's signal aborts.

import { $, h, failure, loading } from './dom.js';
import * as api from './api.js';
import * as live from './live.js';
import hosts from './hosts.js';
import captures from './captures.js';
import capture from './capture.js';
import create from './create.js';
import alerting from './alerting.js';
import tokens from './tokens.js';

const RANK = { reader: 1, operator: 2, admin: 3 };
// [route, nav text, page, least role]
const PAGES = [
  ['hosts', 'Hosts', hosts, 'reader'],
  ['captures', 'Captures', captures, 'reader'],
  ['new', 'New capture', create, 'operator'],
  ['alerting', 'Alerting', alerting, 'reader'],
  ['tokens', 'Tokens', tokens, 'admin'],
];

let me = null; // {role, name} of the token signed in
let page = null; // the current page's AbortController
const can = (role) => !!me && RANK[me.role] >= RANK[role];

function showSignIn(message = '') {
  me = null;
  if (page) page.abort();
  live.stop();
  $('#page').replaceChildren();
  $('#nav').hidden = $('#session').hidden = true;
  $('#sign-in-page').hidden = false;
  $('#sign-in-error').textContent = message;
  $('#token').value = '';
  $('#token').focus();
  document.title = 'Sign in · netwatch';
}

function signOut(message) {
  api.token.clear();
  api.forget();
  showSignIn(message);
}

/** Asks the server who the token is; a 401 comes back through onUnauthorized. */
async function start() {
  const who = await api.get('/netwatch/v1/whoami');
  if (!RANK[who.role]) throw new Error(`the server answered an unknown role ${JSON.stringify(who.role)}`);
  me = who;
  $('#sign-in-page').hidden = true;
  $('#role').textContent = who.role;
  $('#who-name').textContent = who.name ? ` (${who.name})` : '';
  $('#nav').replaceChildren(...PAGES.filter((p) => can(p[3]))
    .map(([route, text]) => h('a', { href: '#/' + route, 'data-nav': route }, text)));
  $('#nav').hidden = $('#session').hidden = false;
  live.start((message) => signOut(message));
  if (!location.hash || location.hash === '#/' || location.hash === '#') location.replace('#/hosts');
  else route();
}

function route() {
  if (!me) return;
  if (page) page.abort();
  page = new AbortController();
  const [name, ...params] = location.hash.replace(/^#\/?/, '').split('/').map((part) => {
    try { return decodeURIComponent(part); } catch { return part; }
  });
  const found = PAGES.find((p) => p[0] === name);
  const detail = name === 'captures' && params.length >= 2;
  const root = $('#page');
  root.replaceChildren();
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.nav === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!found) {
    root.append(h('h1', {}, 'Not found'), h('p', {}, 'No page here. ', h('a', { href: '#/hosts' }, 'Go to Hosts')));
  } else if (!can(found[3])) {
    root.append(h('h1', {}, found[1]), h('p', {}, `Your token's role (${me.role}) cannot use this page: it needs ${found[3]}.`));
  } else {
    document.title = (detail ? params[1] : found[1]) + ' · netwatch';
    const ctx = { signal: page.signal, can, params, role: me.role };
    Promise.resolve()
      .then(() => (detail ? capture : found[2])(root, ctx))
      .catch((err) => {
        if (ctx.signal.aborted || err.name === 'AbortError') return;
        console.error(err);
        root.append(failure('This page failed', err, route));
      });
  }
}

api.onUnauthorized((message) => signOut(message));

$('#sign-in-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const value = $('#token').value.trim();
  if (!value) return;
  const button = $('#sign-in');
  button.disabled = true;
  $('#sign-in-error').textContent = '';
  api.token.set(value);
  try {
    await start();
  } catch (err) {
    if (!api.token.get()) return; // a 401: signOut showed the message
    api.token.clear();
    $('#sign-in-error').textContent = err.message;
  } finally {
    button.disabled = false;
  }
});

$('#sign-out').addEventListener('click', () => signOut(''));
// The skip link moves focus; following it would change the route.
$('.skip').addEventListener('click', (event) => {
  event.preventDefault();
  $('#main').focus();
});

window.addEventListener('hashchange', () => {
  route();
  if (me) $('#main').focus({ preventScroll: true });
});

if (api.token.get()) {
  $('#page').append(loading('Signing in…'));
  start().catch((err) => {
    if (api.token.get()) signOut(err.message);
  });
} else {
  showSignIn();
}
