// Captures: every watcher's captures in one table, their counters updated
// in place from the live stream; Stop and Delete for operators. The cells
// and actions here are shared with the detail page (capture.js).

import { h, table, label, load, time, bytes, badge, nameOf, failure, notice, confirm, messageOf } from './dom.js';
import * as api from './api.js';
import * as live from './live.js';

const key = (id) => String(id || '').toLowerCase();
const ACTIVE = ['Running', 'NotStarted'];

/** `#/captures/<watcher>/<capture>` of a capture id. */
export function href(id) {
  const m = /\/networkWatchers\/([^/]+)\/packetCaptures\/([^/]+)/i.exec(id);
  return m ? `#/captures/${encodeURIComponent(m[1])}/${encodeURIComponent(m[2])}` : '#/captures';
}

/** What a capture runs on, in a few words. */
export function targetText(p = {}) {
  const targets = p.netwatch?.targets;
  if (targets?.vms) return `${targets.vms.length} host${targets.vms.length === 1 ? '' : 's'}: ${targets.vms.map(nameOf).join(', ')}`;
  if (targets?.tags) return 'hosts tagged ' + Object.entries(targets.tags).map(([k, v]) => `${k}=${v}`).join(', ');
  return nameOf(p.target) + (p.targetType === 'AzureVMSS' ? ' (scale set)' : '');
}

export const isFleet = (p = {}) => p.targetType === 'AzureVMSS' || !!p.netwatch?.targets;

function set(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

/** The upload cell: state, a bar and the percentage; why it waits or failed. */
export function upload(nw) {
  if (!nw.uploadState) return h('span', { class: 'muted' }, 'not uploaded');
  const percent = nw.uploadPercent ?? (nw.uploadState === 'Succeeded' ? 100 : null);
  return [h('span', { class: 'upload' }, nw.uploadState,
    percent != null && [' ', h('progress', { max: 100, value: percent, 'aria-label': 'uploaded' }), ` ${percent}%`]),
    nw.filesPending ? h('div', { class: 'muted' }, `${nw.filesPending} file${nw.filesPending === 1 ? '' : 's'} waiting`) : null,
    nw.uploadMessage && h('div', { class: 'muted' }, nw.uploadMessage)];
}

export function errors(status = {}) {
  const codes = status.packetCaptureError || [];
  const message = status.netwatch?.errorMessage;
  if (!codes.length && !message) return h('span', { class: 'muted' }, 'none');
  return [codes.length && h('span', { class: 'error-text' }, codes.join(', ')), message && h('div', { class: 'muted' }, message)];
}

/** Fills the `[data-field]` cells under `root` from a status; only what changed is touched. */
export function fill(root, status = {}) {
  const f = (name) => root.querySelector(`[data-field="${name}"]`);
  const nw = status.netwatch || {};
  const word = status.packetCaptureStatus || 'Unknown';
  const cell = f('status');
  if (cell && cell.textContent !== word) cell.replaceChildren(badge(word));
  set(f('stop-reason'), status.stopReason || '');
  set(f('packets'), String(nw.packetsCaptured ?? 0));
  set(f('drops'), String(nw.kernelDrops ?? 0));
  for (const [name, value] of [['bytes', nw.bytesCaptured], ['file-size', nw.fileSizeInBytes]]) {
    const el = f(name);
    if (el) { set(el, bytes(value)); el.dataset.value = String(value ?? 0); }
  }
  // Cells built from several pieces: rebuilt only when their data changed.
  const parts = { upload: () => upload(nw), errors: () => errors(status), started: () => time(status.captureStartTime),
    'last-seen': () => time(nw.agentLastSeen) };
  const data = { upload: [nw.uploadState, nw.uploadPercent, nw.filesPending, nw.uploadMessage],
    errors: [status.packetCaptureError, nw.errorMessage], started: status.captureStartTime, 'last-seen': nw.agentLastSeen };
  for (const [name, build] of Object.entries(parts)) {
    const el = f(name);
    const sig = JSON.stringify(data[name] ?? null);
    if (el && el.dataset.sig !== sig) { el.dataset.sig = sig; el.replaceChildren(...[build()].flat().filter(Boolean)); }
  }
  root.querySelectorAll('[data-action="stop"]').forEach((b) => {
    if (!b.dataset.busy) b.disabled = !ACTIVE.includes(word);
  });
}

/** Stop and Delete buttons for a capture; `report` shows an outcome, `deleted` runs after a delete. */
export function actions(capture, status, report, deleted) {
  const stop = h('button', { type: 'button', 'data-action': 'stop', disabled: !ACTIVE.includes(status?.packetCaptureStatus) },
    'Stop');
  stop.addEventListener('click', async () => {
    stop.disabled = true;
    stop.dataset.busy = '1';
    stop.textContent = 'Stopping…';
    report(null);
    try {
      await api.stopCapture(capture.id);
      report(notice(`Stopped ${capture.name}; its file is stored.`, 'ok'));
    } catch (err) {
      report(failure(`Could not stop ${capture.name}`, err));
    }
    delete stop.dataset.busy;
    stop.textContent = 'Stop';
    refresh(capture);
  });
  const remove = h('button', { type: 'button', 'data-action': 'delete', class: 'danger' }, 'Delete');
  remove.addEventListener('click', async () => {
    const sure = await confirm(`Delete capture ${capture.name}? A running capture is stopped first. ` +
      'Its files in storage are kept.');
    if (!sure) return;
    remove.disabled = true;
    try {
      await api.deleteCapture(capture.id);
      deleted();
    } catch (err) {
      remove.disabled = false;
      report(failure(`Could not delete ${capture.name}`, err));
    }
  });
  return [stop, remove];
}

/** Reads a capture's status again, for when the stream is down. */
export async function refresh(capture) {
  try {
    live.publish(capture, await api.queryStatus(capture.id));
  } catch { /* the stream or the next look will tell */ }
}

const HEADERS = ['Name', 'Target', 'Status', 'Stop reason', 'Started', 'Packets', 'Bytes', 'Kernel drops', 'Upload',
  'Errors', ''];

export default async function captures(root, ctx) {
  const operator = ctx.can('operator');
  const messages = h('div', { class: 'messages', 'aria-live': 'polite' });
  const report = (node) => messages.replaceChildren(...(node ? [node] : []));
  const body = h('div');
  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'Captures'),
    operator && h('a', { href: '#/new', class: 'button primary', 'data-action': 'new-capture' }, 'New capture')),
  messages, body);

  const rows = new Map();
  const tbody = h('tbody');
  const headers = operator ? HEADERS : HEADERS.slice(0, -1);
  const grid = table(headers, tbody);
  const empty = h('p', { class: 'empty', 'data-test': 'empty' },
    'No captures yet — ', operator ? 'create one with New capture, or ' : 'an operator can create one here, or with ',
    h('code', {}, 'netwatch network watcher packet-capture create --resource-group RG --vm VM --name NAME --storage-account ACCOUNT'),
    '.');
  const showEmpty = () => { empty.hidden = rows.size > 0; grid.hidden = rows.size === 0; };

  const removeRow = (id) => {
    const tr = rows.get(key(id));
    if (tr) { tr.remove(); rows.delete(key(id)); showEmpty(); }
  };
  const addRow = ({ capture, status }) => {
    const tr = h('tr', { 'data-test': 'capture-row', 'data-name': capture.name },
      h('td', {}, h('a', { href: href(capture.id), 'data-action': 'open' }, capture.name)),
      h('td', { title: capture.properties?.target || '' }, targetText(capture.properties)),
      h('td', { 'data-field': 'status' }), h('td', { 'data-field': 'stop-reason' }), h('td', { 'data-field': 'started' }),
      h('td', { 'data-field': 'packets', class: 'num' }), h('td', { 'data-field': 'bytes', class: 'num' }),
      h('td', { 'data-field': 'drops', class: 'num' }), h('td', { 'data-field': 'upload' }),
      h('td', { 'data-field': 'errors' }),
      operator && h('td', {}, h('div', { class: 'actions' }, actions(capture, status, report, () => removeRow(capture.id)))));
    label(tr, headers);
    fill(tr, status || {});
    rows.set(key(capture.id), tr);
    tbody.append(tr);
    showEmpty();
  };
  const update = (kind, entry) => {
    if (kind === 'removed') return removeRow(entry.id);
    const tr = rows.get(key(entry.capture.id));
    if (tr) fill(tr, entry.status || {});
    else addRow(entry);
  };

  await load(body, 'Could not list the captures', async () => {
    const all = await api.allCaptures(ctx.signal);
    const statuses = await api.mapLimit(all, 6, ({ capture }) => api.queryStatus(capture.id, ctx.signal)
      .catch((err) => ({ packetCaptureStatus: 'Unknown', netwatch: { errorMessage: messageOf(err) } })));
    // The stream's copy when it has one: it may be newer.
    all.forEach(({ capture }, i) => addRow(live.captures.get(key(capture.id)) || { capture, status: statuses[i] }));
    for (const entry of live.captures.values()) if (!rows.has(key(entry.capture.id))) addRow(entry);
    showEmpty();
    ctx.signal.addEventListener('abort', live.subscribe(null, update));
    return [empty, grid];
  }, ctx.signal);
}
