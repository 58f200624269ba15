// Building the page without HTML strings: every text from the API goes in as
// a text node or an attribute value, so a name like <img src=x onerror=…>
// shows as that text. Plus the small pieces every page shares.

/** h('a', {href: '#/x', class: 'c', onclick: fn}, 'text', node, [more]) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  let value;
  for (const [key, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (key.startsWith('on') && typeof v === 'function') el.addEventListener(key.slice(2), v);
    else if (key === 'value') value = v;
    else if (key === 'checked') el.checked = true;
    else el.setAttribute(key, v === true ? '' : String(v));
  }
  add(el, children);
  if (value != null) el.value = String(value); // after a select's options exist
  return el;
}

/** Appends children: strings and numbers as text, arrays flattened, null skipped. */
export function add(el, children) {
  for (const child of children) {
    if (child == null || child === false) continue;
    if (Array.isArray(child)) add(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces the children of `el` (null and false skipped). */
export const replace = (el, ...children) => add((el.replaceChildren(), el), children);

export const $ = (selector, root = document) => root.querySelector(selector);

/** The last segment of a resource id (its name). */
export const nameOf = (id) => String(id || '').split('/').filter(Boolean).pop() || '';
/** The resource group a resource id names. */
export function groupOf(id) {
  const m = /\/resourceGroups\/([^/]+)/i.exec(id || '');
  return m ? m[1] : '';
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
/** 1536 → "1.5 KiB". */
export function bytes(n) {
  n = Number(n) || 0;
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(n < 10 ? 1 : 0) : String(n)) + ' ' + UNITS[i];
}

/** A time from the API (Azure writes seven fractional digits), or null. */
export function toDate(iso) {
  if (!iso) return null;
  const d = new Date(String(iso).replace(/(\.\d{3})\d+/, '$1'));
  return isNaN(d) ? null : d;
}

/** <time> in the browser's zone (or `text`), UTC on hover. */
export function time(iso, text) {
  const d = toDate(iso);
  if (!d) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: iso, title: d.toISOString().replace(/\.\d+Z$/, 'Z') + ' (UTC)' }, text || d.toLocaleString());
}

/** "3 min ago". */
export function ago(iso) {
  const d = toDate(iso);
  if (!d) return 'never';
  const s = Math.max(0, Math.round((Date.now() - d) / 1000));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.floor(s / 60) + ' min ago';
  if (s < 86400) return Math.floor(s / 3600) + ' h ago';
  return Math.floor(s / 86400) + ' d ago';
}

/** A table that becomes stacked cards on a phone: each cell says its column. `rows`: <tr>s or a <tbody>. */
export function table(headers, rows, attrs = {}) {
  const tbody = rows instanceof HTMLTableSectionElement ? rows : h('tbody', {}, rows);
  for (const tr of tbody.rows) label(tr, headers);
  const t = h('table', { class: 'grid', ...attrs },
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))), tbody);
  return h('div', { class: 'table-wrap' }, t);
}

/** Gives each cell of `tr` its column's name (the phone layout shows it). */
export function label(tr, headers) {
  [...tr.cells].forEach((td, i) => headers[i] && td.setAttribute('data-label', headers[i]));
  return tr;
}

export function badge(status) {
  return h('span', { class: 'badge s-' + String(status || 'Unknown').toLowerCase() }, status || 'Unknown');
}

export function loading(text = 'Loading…') {
  return h('p', { class: 'loading', role: 'status' }, text);
}

/** What failed, the server's words, and a Retry button. */
export function failure(what, err, retry) {
  return h('div', { class: 'alert error', role: 'alert' },
    h('p', {}, h('strong', {}, what + ': '), messageOf(err)),
    retry && h('button', { type: 'button', onclick: retry }, 'Retry'));
}

/** Fills `el` with what `fill()` resolves to, "Loading…" meanwhile; on failure, what failed and Retry. */
export async function load(el, what, fill, signal) {
  el.replaceChildren(loading());
  try {
    replace(el, await fill());
  } catch (err) {
    if (!signal.aborted) el.replaceChildren(failure(what, err, () => load(el, what, fill, signal)));
  }
}

export function notice(text, kind = 'info') {
  return h('div', { class: 'alert ' + kind, role: kind === 'error' ? 'alert' : 'status' }, text);
}

export const messageOf = (err) => (err && err.message) || String(err);

/** A Copy button for the text of `source` (an element or a function). */
export function copyButton(source, text = 'Copy') {
  const button = h('button', { type: 'button', class: 'quiet small' }, text);
  button.addEventListener('click', async () => {
    const value = typeof source === 'function' ? source() : source.textContent;
    try {
      await navigator.clipboard.writeText(value);
      button.textContent = 'Copied';
    } catch {
      if (source instanceof Node) getSelection().selectAllChildren(source);
      button.textContent = 'Selected: press Ctrl+C';
    }
    setTimeout(() => { button.textContent = text; }, 2000);
  });
  return button;
}

/** A <pre> with its Copy button. */
export function codeBlock(text, id) {
  const pre = h('pre', { id, class: 'code' }, text);
  return h('div', { class: 'code-wrap' }, pre, copyButton(pre));
}

/** The in-page confirmation: resolves true when the user confirms. */
export function confirm(text, yes = 'Delete') {
  const dialog = $('#confirm');
  $('#confirm-text').textContent = text;
  $('#confirm-yes').textContent = yes;
  const opener = document.activeElement;
  return new Promise((resolve) => {
    const done = (answer) => () => { dialog.close(); resolve(answer); };
    const yesButton = $('#confirm-yes'), noButton = $('#confirm-no');
    yesButton.onclick = done(true);
    noButton.onclick = done(false);
    dialog.oncancel = () => resolve(false); // Escape
    dialog.onclose = () => opener && opener.isConnected && opener.focus();
    dialog.showModal();
    noButton.focus();
  });
}

/** A labelled form field: <label>, the control, an optional hint. */
export function field(text, control, hint) {
  const hintEl = hint && h('small', { class: 'hint', id: control.id + '-hint' }, hint);
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: control.id }, text), control, hintEl);
}

/** Shows the API's message next to a control (and marks it invalid). */
export function fieldError(control, message) {
  const id = (control.id || 'f' + Math.random().toString(36).slice(2)) + '-error';
  const note = h('p', { class: 'field-error', 'data-test': 'field-error', id }, message);
  control.setAttribute('aria-invalid', 'true');
  control.setAttribute('aria-errormessage', id);
  (control.closest('.field') || control.parentElement).append(note);
}

/**
 * Shows `err` (null: none) in the form's summary element and next to the
 * control `controlFor(err.target)` names, the server's message in both.
 */
export function showError(form, summary, err, controlFor) {
  clearFieldErrors(form);
  summary.textContent = err ? messageOf(err) : '';
  summary.hidden = !err;
  const control = err && err.target && controlFor && controlFor(err.target);
  if (control) fieldError(control, messageOf(err));
}

/** A form's number as JSON: digits become a number, other text goes as is for the API to name. */
export const number = (text) => (/^-?\d+$/.test(text.trim()) ? Number(text.trim()) : text);

export function clearFieldErrors(root) {
  root.querySelectorAll('[data-test="field-error"]').forEach((n) => n.remove());
  root.querySelectorAll('[aria-invalid]').forEach((n) => n.removeAttribute('aria-invalid'));
}

/** Options for a <select>: [[value, text], …]. */
export const options = (pairs) => pairs.map(([value, text]) => h('option', { value }, text));

/** Ties a function to the events that change a form, debounced. */
export function debounce(fn, ms) {
  let timer;
  const run = (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
  run.cancel = () => clearTimeout(timer);
  return run;
}
