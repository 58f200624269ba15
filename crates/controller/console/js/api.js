// The netwatch API as every client sees it: ARM JSON, the token as a bearer
// header, ARM error bodies, long-running operations followed to the end.

export const V = {
  network: '2024-05-01', compute: '2024-07-01', storage: '2023-05-01', subscriptions: '2022-12-01',
  extension: '2024-11-01',
};

const KEY = 'netwatch.token';
export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

/** An ARM error: `message` is the server's, `target` the JSON path at fault. */
export class ApiError extends Error {
  constructor(status, message, code = '', target = '') {
    super(message);
    Object.assign(this, { status, code, target });
  }
}

let unauthorized = () => {};
/** What to do on a 401 (back to sign-in with the server's message). */
export const onUnauthorized = (fn) => { unauthorized = fn; };

/** The same-origin URL of a path, or of a URL the server wrote with the host it saw. */
export function local(url) {
  const u = new URL(url, location.origin);
  return location.origin + u.pathname + u.search;
}

export const headers = (extra) => ({ Authorization: 'Bearer ' + token.get(), ...extra });

async function errorOf(res) {
  let error = {};
  try { error = (await res.json()).error || {}; } catch { /* not JSON */ }
  const message = error.message || `${res.status} ${res.statusText || 'error'}`;
  if (res.status === 401) unauthorized(message);
  return new ApiError(res.status, message, error.code, error.target);
}

/** fetch with the bearer; ARM errors thrown as ApiError. Returns the Response. */
export async function call(method, path, { body, version, signal } = {}) {
  let url = local(path);
  if (version) url += (url.includes('?') ? '&' : '?') + 'api-version=' + version;
  let res;
  try {
    res = await fetch(url, {
      method, signal, cache: 'no-store',
      headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, `the controller could not be reached (${err.message})`);
  }
  if (!res.ok) throw await errorOf(res);
  return res;
}

const json = async (res) => { const text = await res.text(); return text ? JSON.parse(text) : {}; };

export const get = async (path, version, signal) => json(await call('GET', path, { version, signal }));
export const list = async (path, version, signal) => (await get(path, version, signal)).value || [];

/** A request whose answer may be a long-running operation: followed to its end. */
export async function send(method, path, body, version, signal) {
  const res = await call(method, path, { body, version, signal });
  const result = await json(res);
  await follow(res, signal);
  return result;
}

/** Follows a `202` + `Location` monitor (a stop) until the operation ends; throws its error. */
export async function follow(res, signal) {
  while (res.status === 202 && res.headers.get('Location') && !(signal && signal.aborted)) {
    const wait = Math.min(10, Number(res.headers.get('Retry-After')) || 2);
    await new Promise((resolve) => setTimeout(resolve, wait * 1000));
    res = await call('GET', res.headers.get('Location'), { signal });
  }
}

let subscription;
/** The first subscription's id. */
export function sub() {
  subscription = subscription || list('/subscriptions', V.subscriptions)
    .then((subs) => {
      if (!subs.length) throw new ApiError(0, 'the controller lists no subscription');
      return subs[0].subscriptionId;
    })
    .catch((err) => { subscription = null; throw err; });
  return subscription;
}
export const forget = () => { subscription = null; };

const provider = async (p) => `/subscriptions/${await sub()}/providers/${p}`;
export const watchers = async (signal) => list(await provider('Microsoft.Network/networkWatchers'), V.network, signal);
export const vms = async (signal) => list(await provider('Microsoft.Compute/virtualMachines'), V.compute, signal);
export const scaleSets = async (signal) =>
  list(await provider('Microsoft.Compute/virtualMachineScaleSets'), V.compute, signal);
export const instances = (set, signal) => list(set.id + '/virtualMachines', V.compute, signal);
export const storageAccounts = async (signal) =>
  list(await provider('Microsoft.Storage/storageAccounts'), V.storage, signal);
export const locations = async (signal) => list(`/subscriptions/${await sub()}/locations`, V.subscriptions, signal);

/** The id of the watcher of `location`: the one listed, or the one a capture PUT makes. */
export async function watcherId(location, known) {
  const found = known.find((w) => String(w.location).toLowerCase() === location.toLowerCase());
  return found ? found.id
    : `/subscriptions/${await sub()}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_${location}`;
}

/** That watcher, made when there is none yet (recorders and triggers need one). */
export async function ensureWatcher(location, known) {
  const id = await watcherId(location, known);
  if (!known.some((w) => w.id === id)) await send('PUT', id, { location }, V.network);
  return id;
}

/** Runs `fn` over `items`, at most `n` at once, in order. */
export async function mapLimit(items, n, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => { while (next < items.length) { const i = next++; out[i] = await fn(items[i], i); } };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

/** Every watcher's captures: [{capture, watcher}]. */
export async function allCaptures(signal) {
  const ws = await watchers(signal);
  const lists = await mapLimit(ws, 4, (w) => list(w.id + '/packetCaptures', V.network, signal));
  return lists.flatMap((captures, i) => captures.map((capture) => ({ capture, watcher: ws[i] })));
}

export const queryStatus = async (id, signal) =>
  json(await call('POST', id + '/queryStatus', { version: V.network, signal }));
export const stopCapture = (id) => send('POST', id + '/stop', undefined, V.network);
export const deleteCapture = (id) => send('DELETE', id, undefined, V.network);

const hex = (buffer) => [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, '0')).join('');

/**
 * Downloads `path` (same origin) with the bearer, reporting progress, checks
 * its SHA-256 when one is given, and saves it as `fileName`.
 */
export async function download(path, fileName, sha256, progress) {
  const res = await call('GET', path);
  const total = res.headers.get('Content-Encoding') ? 0 : Number(res.headers.get('Content-Length')) || 0;
  const reader = res.body.getReader();
  const chunks = [];
  let got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    got += value.length;
    progress(got, total);
  }
  if (total && got !== total) throw new Error(`the download stopped at ${got} of ${total} bytes`);
  const blob = new Blob(chunks, { type: 'application/octet-stream' });
  let verified = false;
  if (sha256) {
    if (!crypto.subtle) throw new Error('this page cannot check SHA-256 (not a secure context): use the CLI');
    const digest = hex(await crypto.subtle.digest('SHA-256', await blob.arrayBuffer()));
    if (digest !== sha256.toLowerCase()) {
      throw new Error(`SHA-256 mismatch: the file arrived as ${digest}, the agent stored ${sha256}; not saved`);
    }
    verified = true;
  }
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = fileName;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  return { size: got, verified };
}
