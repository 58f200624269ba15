// Tokens (admin): the client tokens made through the API, a new one shown
// once, and revoking.

import { h, table, load, time, failure, field, options, codeBlock, confirm, notice, showError } from './dom.js';
import * as api from './api.js';

const TOKENS = '/netwatch/v1/tokens';

export default function tokens(root, ctx) {
  const list = h('div');
  const messages = h('div', { 'aria-live': 'polite' });
  const name = h('input', { id: 'new-token-name', required: true, autocomplete: 'off', spellcheck: 'false', placeholder: 'ci' });
  const role = h('select', { id: 'new-token-role' },
    options([['reader', 'reader: look and download'], ['operator', 'operator: also captures'], ['admin', 'admin: everything']]));
  const error = h('p', { class: 'alert error', role: 'alert', hidden: true });
  const made = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { id: 'create-token', type: 'submit', class: 'primary' }, 'Create token');
  const form = h('form', { class: 'card' }, h('h2', {}, 'New token'), error,
    h('div', { class: 'row' }, field('Name', name, '1-64 letters, digits, “.”, “_” or “-”.'), field('Role', role)), submit, made);

  const refresh = () => load(list, 'Could not list the tokens', async () => {
    const value = await api.list(TOKENS, null, ctx.signal);
    return value.length ? table(['Name', 'Role', 'Created', ''], value.map(row))
      : h('p', { class: 'empty', 'data-test': 'empty' }, 'No tokens made here yet — create one below, or with ',
        h('code', {}, 'netwatch token create --name NAME --role reader'), '. The configuration file’s tokens are not listed.');
  }, ctx.signal);
  const row = (t) => {
    const revoke = h('button', { type: 'button', class: 'danger', 'data-action': 'revoke' }, 'Revoke');
    revoke.addEventListener('click', async () => {
      if (!(await confirm(`Revoke token ${t.name}? Whoever uses it is refused at once.`, 'Revoke'))) return;
      revoke.disabled = true;
      try {
        await api.call('DELETE', `${TOKENS}/${encodeURIComponent(t.name)}`);
        messages.replaceChildren(notice(`Token ${t.name} revoked.`, 'ok'));
        refresh();
      } catch (err) {
        revoke.disabled = false;
        messages.replaceChildren(failure(`Could not revoke ${t.name}`, err));
      }
    });
    return h('tr', { 'data-test': 'token-row', 'data-name': t.name },
      h('td', {}, t.name), h('td', {}, t.role), h('td', {}, time(t.createdTime)), h('td', {}, revoke));
  };

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    made.replaceChildren();
    try {
      const res = await api.call('POST', TOKENS, { body: { name: name.value.trim(), role: role.value } });
      const answer = await res.json();
      showError(form, error, null);
      made.replaceChildren(h('p', {}, `Token ${answer.name} (${answer.role}). Copy it now: it is shown only this once.`),
        codeBlock(answer.token, 'created-token'));
      name.value = '';
      refresh();
    } catch (err) {
      showError(form, error, err, (target) => ({ name, role }[target]));
    } finally {
      submit.disabled = false;
    }
  });

  root.append(h('h1', {}, 'Tokens'),
    h('p', { class: 'muted' }, 'Client tokens for the API, the CLI and this console. Roles: reader < operator < admin.'),
    messages, list, form);
  refresh();
}
