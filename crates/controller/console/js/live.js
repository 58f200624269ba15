// Live capture updates: one server-sent-events stream for the whole page
// (`GET /netwatch/v1/captures/events`), read with fetch so it can carry the
// bearer header (EventSource cannot). Pages subscribe by capture id, or to
// every capture. Reconnects with backoff; `#live` says how it is.
//
// Events: `capture` {capture, status} (every capture at connect, then each
// change), `removed` {id}, `synced` {} once the first snapshot is sent.

import { headers } from './api.js';

const EVENTS = '/netwatch/v1/captures/events';
const key = (id) => String(id || '').toLowerCase();

/** The latest {capture, status} of each capture, by lower-case id. */
export const captures = new Map();
const subscribers = new Set();
let controller = null;
let state = '';
let unauthorized = () => {};

function show(text) {
  state = text;
  const el = document.getElementById('live');
  if (!el) return;
  el.textContent = text;
  el.dataset.state = text === 'live' ? 'live' : 'down';
  el.title = text === 'live' ? 'Counters update as the agents report' : 'The event stream is down; retrying';
}
export const status = () => state;

/**
 * Calls `fn(kind, entry)` for `kind` 'capture' ({capture, status}) or
 * 'removed' ({id}) of capture `id`, or of every capture when `id` is null.
 * Returns the unsubscribe function.
 */
export function subscribe(id, fn) {
  const sub = { id: id && key(id), fn };
  subscribers.add(sub);
  return () => subscribers.delete(sub);
}

function emit(kind, entry, id) {
  for (const sub of [...subscribers]) {
    if (sub.id && sub.id !== key(id)) continue;
    try { sub.fn(kind, entry); } catch (err) { console.error('live update failed', err); }
  }
}

function apply(type, data, seen) {
  if (type === 'capture' && data.capture) {
    const id = key(data.capture.id);
    seen && seen.add(id);
    captures.set(id, data);
    emit('capture', data, id);
  } else if (type === 'removed' && data.id) {
    captures.delete(key(data.id));
    emit('removed', data, data.id);
  } else if (type === 'synced' && seen) {
    // Whatever went away while the stream was down.
    for (const id of [...captures.keys()]) if (!seen.has(id)) apply('removed', { id });
  }
}

/** A status read with a request, passed on unless the stream is live (which would be newer). */
export function publish(capture, status) {
  if (state !== 'live') apply('capture', { capture, status });
}

/** Starts the stream (after sign-in); `onUnauthorized` gets the server's 401 message. */
export function start(onUnauthorized) {
  stop();
  unauthorized = onUnauthorized;
  controller = new AbortController();
  run(controller.signal);
}

export function stop() {
  if (controller) controller.abort();
  controller = null;
  captures.clear();
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
});

async function run(signal) {
  let backoff = 1000;
  show('connecting…');
  while (!signal.aborted) {
    try {
      const res = await fetch(EVENTS, { headers: headers({ Accept: 'text/event-stream' }), signal, cache: 'no-store' });
      if (res.status === 401) {
        let message = 'the token was refused';
        try { message = (await res.json()).error.message; } catch { /* not JSON */ }
        return unauthorized(message);
      }
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      show('live');
      await read(res.body, signal, () => { backoff = 1000; });
    } catch (err) {
      if (signal.aborted) return;
      console.warn('event stream:', err.message);
    }
    if (signal.aborted) return;
    show('reconnecting…');
    await sleep(backoff, signal);
    backoff = Math.min(backoff * 2, 15000);
  }
}

/** Parses the SSE stream until it ends; a minute of silence counts as an end. */
async function read(body, signal, synced) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const seen = new Set();
  let buffer = '', type = '', data = '';
  let quiet;
  const watchdog = () => { clearTimeout(quiet); quiet = setTimeout(() => reader.cancel(), 60000); };
  try {
    for (;;) {
      watchdog();
      const { done, value } = await reader.read();
      if (done || signal.aborted) return;
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === '') {
          if (data) {
            let parsed = null;
            try { parsed = JSON.parse(data.slice(0, -1)); } catch { console.warn('bad event data'); }
            if (parsed) apply(type || 'message', parsed, seen);
            if (type === 'synced') synced();
          }
          type = data = '';
        } else if (line[0] !== ':') {
          const at = line.indexOf(':');
          const name = at < 0 ? line : line.slice(0, at);
          let text = at < 0 ? '' : line.slice(at + 1);
          if (text[0] === ' ') text = text.slice(1);
          if (name === 'event') type = text;
          else if (name === 'data') data += text + '\n';
        }
      }
    }
  } finally {
    clearTimeout(quiet);
  }
}
