// One capture: what was asked, how it runs (live), its hosts for a capture
// over many, its files with a checked download each, Stop and Delete.

import { h, add, load, table, time, bytes, badge, nameOf, notice, messageOf, codeBlock } from './dom.js';
import * as api from './api.js';
import * as live from './live.js';
import { fill, actions, targetText, isFleet, upload, errors } from './captures.js';

const STORAGE = '/netwatch/v1/storage/';

export default async function detail(root, ctx) {
  const [watcherName, name] = ctx.params;
  const body = h('div');
  root.append(h('p', { class: 'crumbs' }, h('a', { href: '#/captures' }, 'Captures'), ' / ', name), body);
  await load(body, `Could not read capture ${name}`, async () => {
    const ws = await api.watchers(ctx.signal);
    const watcher = ws.find((w) => w.name.toLowerCase() === watcherName.toLowerCase());
    if (!watcher) throw new Error(`there is no network watcher ${watcherName}`);
    const id = `${watcher.id}/packetCaptures/${encodeURIComponent(name)}`;
    const [capture, status] = await Promise.all([api.get(id, api.V.network, ctx.signal), api.queryStatus(id, ctx.signal)]);
    return render(h('div'), capture, live.captures.get(capture.id.toLowerCase())?.status || status, ctx);
  }, ctx.signal);
}

function render(root, capture, status, ctx) {
  const p = capture.properties || {};
  const messages = h('div', { class: 'messages', 'aria-live': 'polite' });
  const report = (node) => messages.replaceChildren(...(node ? [node] : []));
  const buttons = ctx.can('operator') ? actions(capture, status, report, () => { location.hash = '#/captures'; }) : [];
  const word = h('span', { id: 'capture-status' });
  const stat = (label, fieldName, cls) => h('div', { class: 'stat' }, h('dt', {}, label), h('dd', { 'data-field': fieldName, class: cls }));
  const counters = h('dl', { class: 'stats' },
    stat('Packets', 'packets', 'num big'), stat('Bytes', 'bytes', 'num big'), stat('Kernel drops', 'drops', 'num big'),
    stat('File size', 'file-size', 'num'), stat('Upload', 'upload'), stat('Started', 'started'),
    stat('Stop reason', 'stop-reason'), stat('Errors', 'errors'), stat('Agent last heard', 'last-seen'));
  const fleet = h('div');
  const files = new Map();
  const fileBody = h('tbody');
  const fileTable = table(['File', isFleet(p) && 'Host', 'Size', 'SHA-256', ''].filter((x) => x !== false), fileBody);
  const noFiles = h('p', { class: 'muted' });
  const merged = isFleet(p) && p.storageLocation?.storageId && mergedButton(capture);
  // While it runs, the command that watches it live in Wireshark (issue 18).
  const watching = h('section', { hidden: true }, h('h2', {}, 'Watch it live'),
    h('p', { class: 'muted' }, 'Its packets as the hosts capture them, in Wireshark (or tshark -r -); a reader token may.'),
    codeBlock(`netwatch network watcher packet-capture stream --name ${capture.name} --location ${locationOf(capture)} -w - | wireshark -k -i -`,
      'live-command'));

  add(root, [
    h('div', { class: 'page-head' }, h('h1', {}, capture.name, ' ', word), h('div', { class: 'actions' }, buttons)),
    messages,
    h('section', {}, h('h2', {}, 'Status'), counters),
    watching,
    alertInfo(status),
    fleet,
    h('section', {}, h('h2', {}, 'Files'), noFiles, fileTable, merged),
    request(capture)]);

  const update = (s) => {
    status = s || {};
    const w = status.packetCaptureStatus || 'Unknown';
    if (word.textContent !== w) {
      word.textContent = w;
      word.className = 'badge s-' + w.toLowerCase();
    }
    fill(root, status);
    watching.hidden = w !== 'Running';
    fleetPart(fleet, status);
    for (const file of filesOf(status)) {
      if (files.has(file.storagePath)) continue;
      const tr = fileRow(file, isFleet(p));
      files.set(file.storagePath, tr);
      fileBody.append(tr);
    }
    fileTable.hidden = !files.size;
    noFiles.hidden = !!files.size;
    noFiles.textContent = !p.storageLocation?.storageId
      ? `No storage account: the file stays on the host${p.storageLocation?.filePath ? ' at ' + p.storageLocation.filePath : ''}.`
      : 'No file in storage yet: files are uploaded as the capture ends (a continuous capture’s as each closes).';
  };
  update(status);
  ctx.signal.addEventListener('abort', live.subscribe(capture.id, (kind, entry) => {
    if (kind === 'capture') return update(entry.status);
    report(notice(`Capture ${capture.name} was deleted.`, 'error'));
    root.querySelectorAll('[data-action="stop"],[data-action="delete"]').forEach((b) => { b.disabled = true; });
  }));
  return root;
}

/** The location of a capture's watcher (`NetworkWatcher_westus` → `westus`). */
function locationOf(capture) {
  const watcher = (capture.id || '').split('/').find((x, i, all) => all[i - 1]?.toLowerCase() === 'networkwatchers') || '';
  return watcher.replace(/^NetworkWatcher_/i, '') || 'LOCATION';
}

/** The capture's files: its own, or each host's for a capture over many. */
function filesOf(status) {
  const nw = status.netwatch || {};
  const own = (nw.files || []).map((f) => ({ ...f }));
  const parts = (nw.instances || []).flatMap((i) => (i.files || []).map((f) => ({ ...f, host: `${i.instanceId}: ${i.host || nameOf(i.vmId)}`, instance: i.instanceId })));
  return own.length ? own : parts;
}

function fileRow(file, fleet) {
  let base = file.storagePath.split('?')[0].split('/').pop() || 'capture.cap';
  try { base = decodeURIComponent(base); } catch { /* kept as written */ }
  const fileName = file.instance != null ? `${file.instance}-${base}` : base;
  const at = file.storagePath.indexOf(STORAGE);
  return h('tr', { 'data-test': 'file-row' },
    h('td', { 'data-label': 'File' }, h('code', { title: file.storagePath }, base)),
    fleet && h('td', { 'data-label': 'Host' }, file.host || ''),
    h('td', { 'data-label': 'Size', class: 'num', title: `${file.sizeInBytes} bytes` }, bytes(file.sizeInBytes)),
    h('td', { 'data-label': 'SHA-256' }, h('code', { class: 'hash', title: file.sha256 }, (file.sha256 || '').slice(0, 12) + '…')),
    h('td', { 'data-label': '' }, at < 0 ? h('span', { class: 'muted' }, 'not served by this controller')
      : downloader('download', 'Download', file.storagePath.slice(at), fileName, file.sha256)));
}

function mergedButton(capture) {
  return h('div', { class: 'merged' }, h('p', {}, 'Every host’s packets in one pcapng, merged by time (one interface per host):'),
    downloader('download-merged', 'Download merged file', `${capture.id}/merged?api-version=${api.V.network}`,
      `${capture.name}.pcapng`, null));
}

/** A download button with its progress and outcome. */
function downloader(action, text, path, fileName, sha256) {
  const button = h('button', { type: 'button', 'data-action': action }, text);
  const bar = h('progress', { hidden: true });
  const out = h('span', { class: 'download-out', 'aria-live': 'polite' });
  button.addEventListener('click', async () => {
    button.disabled = true;
    bar.hidden = false;
    bar.removeAttribute('value');
    out.textContent = 'Starting…';
    try {
      const done = await api.download(path, fileName, sha256, (got, total) => {
        if (total) { bar.max = total; bar.value = got; }
        out.textContent = total ? `${bytes(got)} of ${bytes(total)}` : bytes(got);
      });
      out.replaceChildren(h('span', { 'data-test': 'download-done', class: 'ok-text' },
        `Saved ${fileName} (${bytes(done.size)})` + (done.verified ? ', SHA-256 verified' : '; no SHA-256 to check it against')));
    } catch (err) {
      out.replaceChildren(h('span', { class: 'error-text', role: 'alert' }, 'Download failed: ' + messageOf(err)));
    }
    bar.hidden = true;
    button.disabled = false;
  });
  return h('div', { class: 'download' }, button, bar, out);
}

/** A capture over many hosts: the summary and a row per instance, rebuilt when they change. */
function fleetPart(root, status) {
  const nw = status.netwatch || {};
  const list = nw.instances || [];
  const sig = JSON.stringify([nw.summary, list]);
  if (root.dataset.sig === sig) return;
  root.dataset.sig = sig;
  if (!list.length && !nw.summary) return root.replaceChildren();
  const rows = list.map((i) => h('tr', { 'data-test': 'instance-status', 'data-instance': i.instanceId },
    h('td', {}, i.instanceId), h('td', { title: i.vmId }, i.host || nameOf(i.vmId)), h('td', {}, badge(i.packetCaptureStatus)),
    h('td', {}, time(i.captureStartTime)), h('td', {}, i.stopReason || ''), h('td', {}, errors(i)),
    h('td', { class: 'num' }, String(i.packetsCaptured ?? 0)), h('td', { class: 'num' }, bytes(i.bytesCaptured)),
    h('td', { class: 'num' }, String(i.kernelDrops ?? 0)), h('td', {}, upload(i)),
    h('td', { class: 'num' }, String((i.files || []).length))));
  root.replaceChildren(h('section', {}, h('h2', {}, 'Hosts'),
    nw.summary && h('p', {}, nw.summary.text),
    nw.summary?.failures?.length ? h('ul', { class: 'error-text' }, nw.summary.failures.map((f) => h('li', {}, f))) : null,
    table(['Instance', 'Host', 'Status', 'Started', 'Stop reason', 'Errors', 'Packets', 'Bytes', 'Kernel drops', 'Upload', 'Files'], rows)));
}

function alertInfo(status) {
  const a = status.netwatch?.alert;
  if (!a) return null;
  return h('section', {}, h('h2', {}, 'Alert'), h('dl', { class: 'pairs' },
    pair('Rule', a.alertRule), pair('Alert', a.alertId), pair('Fired', a.firedDateTime && time(a.firedDateTime)),
    pair('Trigger', a.trigger && nameOf(a.trigger)),
    pair('Seconds before', a.secondsBeforeRequested != null && `${a.secondsBeforeCovered ?? '?'} covered of ${a.secondsBeforeRequested} asked`)));
}

const pair = (label, value) => (value == null || value === '' || value === false ? null
  : h('div', {}, h('dt', {}, label), h('dd', {}, value)));

/** What was asked: target, limits, storage, filters, and the JSON itself. */
function request(capture) {
  const p = capture.properties || {};
  const s = p.storageLocation || {};
  const scope = p.scope && [p.scope.include?.length && 'include ' + p.scope.include.join(', '),
    p.scope.exclude?.length && 'exclude ' + p.scope.exclude.join(', ')].filter(Boolean).join('; ');
  const cs = p.captureSettings || {};
  const filters = p.filters || [];
  return h('section', {}, h('h2', {}, 'Request'),
    h('dl', { class: 'pairs' },
      pair('Target', h('span', { title: p.target || '' }, targetText(p))),
      pair('Target type', p.targetType),
      isFleet(p) && pair('Instances', scope || 'all'),
      pair('Bytes per packet', p.bytesToCapturePerPacket != null && (p.bytesToCapturePerPacket ? String(p.bytesToCapturePerPacket) : '0 (whole packets)')),
      pair('Total bytes', p.totalBytesPerSession != null && `${p.totalBytesPerSession} (${bytes(p.totalBytesPerSession)})`),
      pair('Time limit', p.timeLimitInSeconds != null && `${p.timeLimitInSeconds} s`),
      pair('Continuous capture', p.continuousCapture != null && String(p.continuousCapture)),
      p.continuousCapture != null && pair('Files', `${cs.fileCount} of ${bytes(cs.fileSizeInBytes)}, for ${cs.sessionTimeLimitInSeconds} s`),
      pair('Storage account', s.storageId && h('span', { title: s.storageId }, nameOf(s.storageId))),
      pair('Storage path', s.storagePath && h('code', {}, s.storagePath)),
      pair('File on the host', (s.filePath || s.localPath) && h('code', {}, s.filePath || s.localPath)),
      pair('Provisioning', p.provisioningState)),
    h('h3', {}, 'Filters'),
    filters.length ? table(['#', 'Protocol', 'Local IP', 'Local port', 'Remote IP', 'Remote port'], filters.map((f, i) =>
      h('tr', {}, [String(i + 1), f.protocol || 'Any', f.localIPAddress, f.localPort, f.remoteIPAddress, f.remotePort]
        .map((v) => h('td', {}, v || '—')))))
      : h('p', { class: 'muted' }, 'None: every packet is kept.'),
    h('details', {}, h('summary', {}, 'The capture as the API returns it'), h('pre', { class: 'code' }, JSON.stringify(capture, null, 2))));
}
