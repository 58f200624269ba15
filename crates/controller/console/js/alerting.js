// Alerting: flight recorders (a rolling window of recent traffic on hosts)
// and triggers (alerts that become captures), per network watcher; listed
// with each host's recorder, made and edited by operators.

import { h, load, table, time, bytes, nameOf, failure, loading, field, options, codeBlock, confirm, notice, number, showError } from './dom.js';
import * as api from './api.js';
import { filterEditor, filterControl } from './filters.js';

const RECORDERS = 'netwatchFlightRecorders';
const TRIGGERS = 'netwatchTriggers';
const what = (kind) => (kind === RECORDERS ? 'flight recorder' : 'trigger');

export default function alerting(root, ctx) {
  const operator = ctx.can('operator');
  const editor = h('div');
  const messages = h('div', { 'aria-live': 'polite' });
  const body = h('div');
  root.append(h('h1', {}, 'Alerting'),
    h('p', { class: 'muted' }, 'A flight recorder keeps the last seconds of traffic on its hosts; a trigger turns an ' +
      'alert (Azure Monitor, Alertmanager) into a capture from before the alert to after it.'),
    messages, editor, body);
  let ws = [];
  let data = null; // what the forms choose from, loaded once

  const done = (note) => {
    editor.replaceChildren();
    messages.replaceChildren(...(note ? [note] : []));
    refresh();
  };
  const open = async (kind, existing) => {
    messages.replaceChildren();
    editor.replaceChildren(loading('Loading targets…'));
    try {
      data = data || await Promise.all([api.vms(), api.scaleSets(), api.storageAccounts(), api.locations().catch(() => [])]);
      const form = (kind === RECORDERS ? recorderForm : triggerForm)(existing, data, ws, done);
      editor.replaceChildren(form);
      form.querySelector('input:not([readonly]),select').focus();
    } catch (err) {
      editor.replaceChildren(failure('Could not load the form', err, () => open(kind, existing)));
    }
  };
  const remove = async (kind, item) => {
    const extra = kind === RECORDERS ? ' Its hosts stop recording and delete its files.' : ' Alerts sent to it are refused.';
    if (!(await confirm(`Delete ${what(kind)} ${item.name}?${extra}`))) return;
    try {
      await api.send('DELETE', item.id, undefined, api.V.network);
      done(notice(`Deleted ${what(kind)} ${item.name}.`, 'ok'));
    } catch (err) {
      messages.replaceChildren(failure(`Could not delete ${item.name}`, err));
    }
  };
  const section = (kind, title, items, headers, row, cli) => h('section', {},
    h('div', { class: 'page-head' }, h('h2', {}, title), operator && h('button', {
      type: 'button', class: 'primary', 'data-action': kind === RECORDERS ? 'new-recorder' : 'new-trigger', onclick: () => open(kind),
    }, 'New ' + what(kind))),
    items.length ? table([...headers, ...(operator ? [''] : [])], items.map((item) => row(item, operator && h('td', {},
      h('div', { class: 'actions' },
        h('button', { type: 'button', 'data-action': 'edit', onclick: () => open(kind, item) }, 'Edit'),
        h('button', { type: 'button', class: 'danger', 'data-action': 'delete', onclick: () => remove(kind, item) }, 'Delete'))))))
      : h('p', { class: 'empty' }, `No ${what(kind)}s — `, operator ? `add one with New ${what(kind)}, or ` : '',
        h('code', {}, `netwatch network watcher ${cli} create …`), '.'));

  const refresh = () => load(body, 'Could not list recorders and triggers', async () => {
    ws = await api.watchers(ctx.signal);
    const per = (kind) => api.mapLimit(ws, 4, (w) => api.list(`${w.id}/${kind}`, api.V.network, ctx.signal)
      .then((items) => items.map((item) => ({ ...item, location: w.location }))));
    const [recorders, triggers] = (await Promise.all([per(RECORDERS), per(TRIGGERS)])).map((x) => x.flat());
    return [section(RECORDERS, 'Flight recorders', recorders, ['Name', 'Location', 'Target', 'Keeps', 'Filters', 'Hosts'],
      recorderRow, 'flight-recorder'),
    section(TRIGGERS, 'Triggers', triggers, ['Name', 'Location', 'Alerts', 'Hosts', 'Capture', 'Guards', 'Webhook'],
      triggerRow, 'trigger')];
  }, ctx.signal);
  refresh();
}

const list = (items) => h('ul', { class: 'plain' }, items.filter(Boolean).map((x) => h('li', {}, x)));
const kv = (o) => Object.keys(o || {}).length && Object.entries(o).map(([k, v]) => `${k}=${v}`).join(', ');

function recorderRow(r, actions) {
  const p = r.properties || {};
  return h('tr', { 'data-test': 'recorder-row', 'data-name': r.name },
    h('td', {}, r.name), h('td', {}, r.location), h('td', { title: p.target }, nameOf(p.target)),
    h('td', {}, `${p.seconds} s, at most ${bytes(p.maxBytes)}`, p.bytesToCapturePerPacket ? `, ${p.bytesToCapturePerPacket} B a packet` : ''),
    h('td', {}, String(p.filters?.length || 'none')),
    h('td', {}, p.hosts?.length ? list(p.hosts.map((host) => [
      h('strong', {}, nameOf(host.vmId)), ` ${host.state}`,
      host.windowSeconds != null && ` · ${Math.round(host.windowSeconds)} s held`,
      ` · ${bytes(host.bytes)}, ${host.packets} packets, ${host.kernelDrops} drops`,
      host.updated && [' · ', time(host.updated)],
      host.error && h('div', { class: 'error-text' }, host.error)]))
      : h('span', { class: 'muted' }, 'no host')),
    actions);
}

function triggerRow(t, actions) {
  const p = t.properties || {};
  const m = p.match || {}, hs = p.hosts || {}, c = p.capture || {};
  return h('tr', { 'data-test': 'trigger-row', 'data-name': t.name },
    h('td', {}, t.name), h('td', {}, t.location),
    h('td', {}, list([`from ${p.source || 'Any'}`, m.alertRules?.length && 'rules ' + m.alertRules.join(', '),
      m.severities?.length && 'severities ' + m.severities.join(', '), kv(m.labels) && 'labels ' + kv(m.labels),
      p.stopOnResolved && 'stops when resolved'])),
    h('td', {}, list([hs.fromAlert !== false && 'the alert’s targets', hs.vms?.length && hs.vms.map(nameOf).join(', '),
      kv(hs.tags) && 'tagged ' + kv(hs.tags)])),
    h('td', {}, list([`${c.secondsBefore ?? 60} s before to ${c.secondsAfter ?? 60} s after`,
      c.filters?.length && `${c.filters.length} filter${c.filters.length > 1 ? 's' : ''}`,
      p.storageLocation?.storageId && 'to ' + nameOf(p.storageLocation.storageId)])),
    h('td', {}, list([`cooldown ${p.cooldownSeconds ?? 300} s`, `${p.maxConcurrent ?? 10} at once`, `${p.maxPerHour ?? 60} an hour`])),
    h('td', {}, h('code', { class: 'wrap' }, p.webhookUrl || '')),
    actions);
}

// ---- forms ----

const at = (o, path) => path.split('.').reduce((x, k) => x?.[k], o);
const put = (o, path, v) => {
  const keys = path.split('.');
  const last = keys.pop();
  keys.reduce((x, k) => (x[k] = x[k] || {}), o)[last] = v;
};
const input = (id, attrs) => h('input', { id, autocomplete: 'off', spellcheck: 'false', ...attrs });
const check = (el, text) => h('div', { class: 'check' }, el, h('label', { for: el.id }, text));

/**
 * A form for a recorder or trigger: name, location (its watcher), the
 * numbers `numbers` lists ([id, property path, label, placeholder]) in a row
 * that `fill(form, row)` places with its own controls; PUT of what `build` returns, errors shown at the control their
 * path names (`controlFor`), the answer to `after`.
 */
function resourceForm(kind, existing, [vms, sets, , locs], ws, { numbers, fill, build, controlFor, after }) {
  const props = existing?.properties || {};
  const p = kind === RECORDERS ? 'recorder' : 'trigger';
  const name = input(p + '-name', { required: true, value: existing?.name, readonly: !!existing });
  const names = new Map(locs.map((l) => [l.name, l.displayName || l.name]));
  for (const r of [...vms, ...sets, ...ws]) if (!names.has(r.location)) names.set(r.location, r.location);
  const location = h('select', { id: p + '-location', disabled: !!existing, value: existing?.location }, options([...names]));
  const controls = numbers.map(([id, path, , hint]) => [path, input(`${p}-${id}`, { inputmode: 'numeric', value: at(props, path), placeholder: hint })]);
  const error = h('p', { class: 'alert error', role: 'alert', hidden: true });
  const save = h('button', { type: 'submit', class: 'primary', id: p + '-save' }, 'Save');
  const form = h('form', { class: 'card', novalidate: true }, h('h2', {}, existing ? `Edit ${existing.name}` : 'New ' + what(kind)),
    error, h('div', { class: 'row' }, field('Name', name), field('Location', location)));
  fill(form, h('div', { class: 'row' }, controls.map(([, el], i) => field(numbers[i][2], el))));
  form.append(h('div', { class: 'form-actions' }, save, h('button', { type: 'button', class: 'quiet', onclick: () => after(null) }, 'Cancel')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    save.disabled = true;
    try {
      const properties = build();
      for (const [path, el] of controls) if (el.value !== '') put(properties, path, number(el.value));
      const watcher = existing ? existing.id.replace(/\/[^/]+\/[^/]+$/, '') : await api.ensureWatcher(location.value, ws);
      const res = await api.call('PUT', `${watcher}/${kind}/${encodeURIComponent(name.value.trim())}`,
        { body: { properties }, version: api.V.network });
      showError(form, error, null);
      after(await res.json());
    } catch (err) {
      showError(form, error, err, (t) => (t === 'name' ? name : t === 'location' ? location
        : controls.find(([path]) => t === 'properties.' + path)?.[1] || controlFor(t)));
    } finally {
      save.disabled = false;
    }
  });
  return form;
}

function targetSelect(id, vms, sets, value) {
  return h('select', { id, value },
    h('optgroup', { label: 'Virtual machines' }, options(vms.map((v) => [v.id, `${v.name} (${v.location})`]))),
    sets.length && h('optgroup', { label: 'Scale sets' }, options(sets.map((s) => [s.id, `${s.name} (${s.location})`]))));
}

function recorderForm(existing, data, ws, done) {
  const p = existing?.properties || {};
  const target = targetSelect('recorder-target', data[0], data[1], p.target);
  const filters = filterEditor(() => {}, 'recorder-add-filter');
  filters.set(p.filters);
  return resourceForm(RECORDERS, existing, data, ws, {
    numbers: [['seconds', 'seconds', 'Seconds kept', '60 (1-3600)'], ['max-bytes', 'maxBytes', 'Most bytes on the host', '1073741824 (1 GiB)'],
      ['bytes-per-packet', 'bytesToCapturePerPacket', 'Bytes per packet', '0 (whole packets)']],
    fill: (form, row) => form.append(field('Target', target), row, h('fieldset', { class: 'group' }, h('legend', {}, 'Filters'), filters.element)),
    build: () => {
      const list = filters.value();
      return list.length ? { target: target.value, filters: list } : { target: target.value };
    },
    controlFor: (t) => filterControl(filters, t) || (t.startsWith('properties.target') ? target : null),
    after: (answer) => done(answer && notice(`Saved flight recorder ${answer.name}: its hosts record.`, 'ok')),
  });
}

/** Without empty objects and unset values. */
const prune = (o) => {
  for (const [k, v] of Object.entries(o)) {
    if (v && typeof v === 'object' && !Array.isArray(v)) prune(v);
    if (v == null || (typeof v === 'object' && !Object.keys(v).length)) delete o[k];
  }
  return o;
};
/** Deep merge of plain objects (`b` wins). */
const merge = (a, b) => {
  for (const [k, v] of Object.entries(b)) {
    a[k] = v && typeof v === 'object' && !Array.isArray(v) && a[k] && typeof a[k] === 'object' ? merge(a[k], v) : v;
  }
  return a;
};

function triggerForm(existing, data, ws, done) {
  const p = existing?.properties || {};
  const m = p.match || {}, hs = p.hosts || {}, c = p.capture || {};
  const source = h('select', { id: 'trigger-source', value: p.source || 'Any' },
    options([['Any', 'Any'], ['AzureMonitor', 'Azure Monitor'], ['Alertmanager', 'Alertmanager']]));
  const rules = input('trigger-rules', { value: (m.alertRules || []).join(', '), placeholder: 'any rule' });
  const severities = input('trigger-severities', { value: (m.severities || []).join(', '), placeholder: 'Sev0, critical' });
  const fromAlert = h('input', { id: 'trigger-from-alert', type: 'checkbox', checked: hs.fromAlert !== false });
  const stop = h('input', { id: 'trigger-stop', type: 'checkbox', checked: !!p.stopOnResolved });
  const account = h('select', { id: 'trigger-storage-account', value: existing ? p.storageLocation?.storageId || '' : data[2][0]?.id },
    options([['', 'None: keep the file on the host'], ...data[2].map((a) => [a.id, a.name])]));
  const path = input('trigger-file-path', { value: p.storageLocation?.filePath, placeholder: '/var/captures/NAME.cap' });
  const rest = prune({ match: { labels: m.labels }, hosts: { vms: hs.vms, tags: hs.tags }, capture: {
    filters: c.filters?.length ? c.filters : null, bytesToCapturePerPacket: c.bytesToCapturePerPacket,
    totalBytesPerSession: c.totalBytesPerSession } });
  const more = h('textarea', { id: 'trigger-more', rows: 5, spellcheck: 'false', class: 'mono' },
    Object.keys(rest).length ? JSON.stringify(rest, null, 2) : '');
  const words = (el) => el.value.split(',').map((s) => s.trim()).filter(Boolean);
  const byPath = [['source', source], ['match.alertRules', rules], ['match.severities', severities],
    ['storageLocation.filePath', path], ['storageLocation', account]];
  return resourceForm(TRIGGERS, existing, data, ws, {
    numbers: [['before', 'capture.secondsBefore', 'Seconds before the alert', '60 (0-3600)'],
      ['after', 'capture.secondsAfter', 'Seconds after', '60 (0-18000)'], ['cooldown', 'cooldownSeconds', 'Cooldown per host (s)', '300'],
      ['concurrent', 'maxConcurrent', 'Most at once', '10'], ['per-hour', 'maxPerHour', 'Most an hour', '60']],
    fill: (form, row) => form.append(
      h('div', { class: 'row' }, field('Alerts from', source), field('Alert rules', rules, 'Comma-separated; none: any.'),
        field('Severities', severities, 'Comma-separated; none: any.')),
      check(fromAlert, 'Capture on the alert’s own hosts'), check(stop, 'Stop the capture when the alert resolves'),
      h('div', { class: 'row' }, field('Storage account', account), field('File on the host', path)), row,
      field('More properties (JSON, merged in)', more, 'match.labels, hosts.vms, hosts.tags, capture.filters, ' +
        'capture.bytesToCapturePerPacket, capture.totalBytesPerSession, webhookSecret.')),
    build: () => {
      const props = { source: source.value, match: { alertRules: words(rules), severities: words(severities) },
        hosts: { fromAlert: fromAlert.checked }, storageLocation: { storageId: account.value || null, filePath: path.value || null },
        stopOnResolved: stop.checked };
      if (!props.match.alertRules.length) delete props.match.alertRules;
      if (!props.match.severities.length) delete props.match.severities;
      if (more.value.trim()) {
        try {
          merge(props, JSON.parse(more.value));
        } catch (err) {
          throw Object.assign(new Error('More properties: ' + err.message), { target: 'more' });
        }
      }
      return prune(props);
    },
    controlFor: (t) => (t === 'more' ? more : byPath.find(([x]) => t.startsWith('properties.' + x))?.[1] || more),
    after: (answer) => {
      const url = answer?.properties?.webhookUrl;
      if (!url || url.includes('<secret')) return done(answer && notice(`Saved trigger ${answer.name}.`, 'ok'));
      // Shown once: the controller keeps only the secret's digest.
      done(h('div', { class: 'alert ok' }, h('p', {}, `Saved trigger ${answer.name}. Point the alerting system at this URL; ` +
        'copy it now: its secret is shown only this once.'), codeBlock(url, 'webhook-url')));
    },
  });
}
