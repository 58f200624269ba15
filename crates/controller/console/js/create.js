// New capture: a form whose request is checked by the API as it is edited
// (`POST /netwatch/v1/validate/packetCapture`, the PUT's own checks), shown
// as the JSON it will send and as the equivalent netwatch / az command.

import {
  h, replace, load, field, options, codeBlock, copyButton, nameOf, groupOf, number, showError, debounce, clearFieldErrors,
} from './dom.js';
import * as api from './api.js';
import { filterEditor, filterControl } from './filters.js';
import { href } from './captures.js';

const VALIDATE = '/netwatch/v1/validate/packetCapture';

export default async function create(root, ctx) {
  const body = h('div');
  root.append(h('h1', {}, 'New capture'), body);
  const s = ctx.signal;
  await load(body, 'Could not load the targets and storage accounts', async () => {
    const [ws, vms, sets, accounts, locs] = await Promise.all([api.watchers(s), api.vms(s), api.scaleSets(s),
      api.storageAccounts(s), api.locations(s).catch(() => [])]);
    const members = await api.mapLimit(sets, 4, (set) => api.instances(set, s).catch(() => []));
    sets.forEach((set, i) => { set.members = members[i]; });
    return form({ ws, vms, sets, accounts, locs }, ctx);
  }, s);
}

const input = (id, attrs) => h('input', { id, autocomplete: 'off', spellcheck: 'false', ...attrs });
/** Number inputs in a row: `into(o)` sets the properties given, `paths(prefix)` maps error paths to them. */
function numbers(specs) {
  const els = specs.map(([id, , , placeholder]) => input(id, { inputmode: 'numeric', placeholder }));
  return {
    row: h('div', { class: 'row' }, specs.map((s, i) => field(s[2], els[i]))),
    into: (o) => {
      specs.forEach(([, key], i) => { if (els[i].value !== '') o[key] = number(els[i].value); });
      return o;
    },
    paths: (prefix) => specs.map(([, key], i) => [prefix + key, els[i]]),
  };
}
/** Single-quoted for a POSIX shell when it needs quoting. */
const quote = (s) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

function form({ ws, vms, sets, accounts, locs }, ctx) {
  const name = input('capture-name', { required: true, placeholder: 'web-443', maxlength: 80 });
  const type = h('select', { id: 'target-type' }, options([['AzureVM', 'Virtual machine'], ['AzureVMSS', 'Scale set']]));
  const target = h('select', { id: 'target' });
  const names = new Map(locs.map((l) => [l.name, l.displayName || l.name]));
  for (const r of [...vms, ...sets]) if (!names.has(r.location)) names.set(r.location, r.location);
  const loc = h('select', { id: 'location' }, options([...names].map(([value, text]) => [value, `${text} (${value})`])));
  const include = input('scope-include', { placeholder: 'all instances' });
  const exclude = input('scope-exclude', { placeholder: 'none' });
  const instancesHint = h('small', { class: 'hint' });
  const scope = h('fieldset', { class: 'group' }, h('legend', {}, 'Instances'),
    h('div', { class: 'row' }, field('Include (ids)', include), field('Exclude (ids)', exclude)), instancesHint);
  const account = h('select', { id: 'storage-account' },
    options([['', 'None: keep the file on the host'], ...accounts.map((a) => [a.id, `${a.name} (${a.location || groupOf(a.id)})`])]));
  if (accounts.length) account.value = accounts[0].id;
  const path = input('file-path', { placeholder: '/var/captures/NAME.cap' });
  // [id, property, label, placeholder]: numbers sent as the user typed them.
  const limits = numbers([['bytes-per-packet', 'bytesToCapturePerPacket', 'Bytes per packet', '0 (whole packets)'],
    ['total-bytes', 'totalBytesPerSession', 'Total bytes', '1073741824 (1 GiB)'],
    ['time-limit', 'timeLimitInSeconds', 'Time limit (seconds)', '18000 (5 hours)']]);
  const continuous = h('input', { id: 'continuous', type: 'checkbox' });
  const ring = numbers([['file-count', 'fileCount', 'Files kept', '10'],
    ['file-size', 'fileSizeInBytes', 'Bytes per file', '104857600 (100 MiB)'],
    ['session-time-limit', 'sessionTimeLimitInSeconds', 'Session time limit (s)', '86400 (a day)']]);
  const formError = h('p', { id: 'form-error', class: 'alert error', role: 'alert', hidden: true });
  const submit = h('button', { id: 'create-capture', type: 'submit', class: 'primary', disabled: true }, 'Create capture');
  const filters = filterEditor(() => changed());
  const requestLine = h('code');
  const previews = h('div');

  const chosen = () => (type.value === 'AzureVM' ? vms : sets).find((r) => r.id === target.value);
  const fillTargets = () => {
    const list = type.value === 'AzureVM' ? vms : sets;
    target.replaceChildren(...(list.length ? options(list.map((r) => [r.id, `${r.name} — ${groupOf(r.id)}, ${r.location}` +
      (r.properties?.netwatch?.connected === false ? ' (offline)' : '')]))
      : options([['', type.value === 'AzureVM' ? 'No VMs: enroll a host first' : 'No scale sets']])));
    target.value = (list.find((r) => r.location === loc.value) || list[0] || {}).id || '';
    followTarget();
  };
  const followTarget = () => {
    const r = chosen();
    if (r) loc.value = r.location;
    const ids = r?.members?.map((m) => m.instanceId) || [];
    instancesHint.textContent = ids.length ? `Instances now: ${ids.join(', ')}. Ids separated by spaces or commas.` : '';
  };
  const ids = (text) => text.split(/[\s,;]+/).filter(Boolean);

  /** The PUT body, as the form says it. */
  const request = () => {
    const p = { target: target.value || undefined, targetType: type.value };
    if (type.value === 'AzureVMSS' && (include.value.trim() || exclude.value.trim())) {
      p.scope = {};
      if (include.value.trim()) p.scope.include = ids(include.value);
      if (exclude.value.trim()) p.scope.exclude = ids(exclude.value);
    }
    limits.into(p);
    p.storageLocation = {};
    if (account.value) p.storageLocation.storageId = account.value;
    if (path.value !== '') p.storageLocation[continuous.checked ? 'localPath' : 'filePath'] = path.value;
    const list = filters.value();
    if (list.length) p.filters = list;
    if (continuous.checked) {
      p.continuousCapture = true;
      const cs = ring.into({});
      if (Object.keys(cs).length) p.captureSettings = cs;
    }
    return { properties: p };
  };

  /** The same capture with the CLI (`netwatch` or `az`): the flags packet_capture.rs reads. */
  const command = (program, p) => {
    const group = groupOf(p.target) || 'RG';
    const args = [program, 'network', 'watcher', 'packet-capture', 'create', '--resource-group', group];
    if (p.targetType === 'AzureVMSS') {
      args.push('--target-type', 'AzureVMSS', '--target', nameOf(p.target) || 'SCALE_SET');
      if (p.scope?.include) args.push('--include', ...p.scope.include);
      if (p.scope?.exclude) args.push('--exclude', ...p.scope.exclude);
    } else {
      args.push('--vm', nameOf(p.target) || 'VM');
    }
    args.push('--name', name.value.trim() || 'NAME');
    const sl = p.storageLocation;
    if (sl.storageId) args.push('--storage-account', groupOf(sl.storageId) === group ? nameOf(sl.storageId) : sl.storageId);
    if (sl.filePath) args.push('--file-path', sl.filePath);
    for (const [flag, key] of [['--capture-size', 'bytesToCapturePerPacket'], ['--capture-limit', 'totalBytesPerSession'],
      ['--time-limit', 'timeLimitInSeconds']]) if (p[key] != null) args.push(flag, String(p[key]));
    if (p.filters) args.push('--filters', JSON.stringify(p.filters));
    return args.map(quote).join(' ');
  };

  const watcherOf = () => api.watcherId(loc.value, ws);
  const preview = async (b) => {
    const id = `${await watcherOf()}/packetCaptures/${encodeURIComponent(name.value.trim() || 'NAME')}`;
    requestLine.textContent = `PUT ${id}?api-version=${api.V.network}`;
    const p = b.properties;
    replace(previews,
      h('h3', {}, 'netwatch'), codeBlock(command('netwatch', p), 'cli-preview'),
      h('h3', {}, 'az'), codeBlock(command('az', p), 'az-preview'),
      p.continuousCapture && h('p', { class: 'muted' }, 'The CLI has no flag for continuous capture: send the request above.'));
    jsonPre.textContent = JSON.stringify(b, null, 2);
  };
  const jsonPre = h('pre', { id: 'request-preview', class: 'code' });

  // Errors the API names by JSON path, shown at their control.
  const controlFor = (t) => {
    const found = filterControl(filters, t);
    if (found) return found;
    const map = [['properties.targetType', type], ['properties.target', target], ['properties.scope.exclude', exclude],
      ['properties.scope', include], ['properties.storageLocation.storageId', account],
      ['properties.storageLocation.filePath', path], ['properties.storageLocation.localPath', path],
      ['properties.storageLocation', account], ['properties.continuousCapture', continuous],
      ...limits.paths('properties.'), ...ring.paths('properties.captureSettings.'),
      ['properties.captureSettings', continuous], ['packetCaptureName', name], ['name', name], ['location', loc]];
    return (map.find(([p]) => t === p || t.startsWith(p + '.') || t.startsWith(p + '[')) || [])[1];
  };

  let valid = false, busy = false, checks = 0;
  const ready = () => { submit.disabled = busy || !valid || !name.value.trim(); };
  /** Asks the API about the request; true when it would be accepted. */
  const validate = async () => {
    const mine = ++checks;
    const b = request();
    try {
      const named = name.value.trim() ? '?name=' + encodeURIComponent(name.value.trim()) : '';
      await api.call('POST', VALIDATE + named, { body: b });
      if (mine !== checks) return false;
      valid = true;
      showError(formEl, formError, null);
    } catch (err) {
      if (mine !== checks) return false;
      // Only a refusal blocks: when the check itself failed, the PUT checks the same.
      valid = err.status !== 400;
      showError(formEl, formError, valid ? null : err, controlFor);
      if (valid) {
        formError.textContent = 'Could not check the form (the create will): ' + err.message;
        formError.hidden = false;
      }
    }
    ready();
    return valid;
  };
  const validateSoon = debounce(validate, 300);
  const changed = () => {
    ring.row.hidden = !continuous.checked;
    scope.hidden = type.value !== 'AzureVMSS';
    preview(request());
    ready();
    validateSoon();
  };

  const formEl = h('form', { class: 'capture-form', novalidate: true },
    formError,
    h('div', { class: 'columns' },
      h('fieldset', { class: 'group' }, h('legend', {}, 'What to capture on'),
        field('Name', name, 'Letters, digits, “-”, “_” and “.”; unique in its location.'),
        field('Target type', type), field('Target', target),
        field('Location', loc, 'The network watcher of this location holds the capture; it is the target’s.'),
        scope),
      h('fieldset', { class: 'group' }, h('legend', {}, 'Where the file goes'),
        field('Storage account', account),
        field('File on the host', path, 'Optional with a storage account; under /var/captures, ending in .cap.'),
        h('div', { class: 'check' }, continuous, h('label', { for: 'continuous' }, 'Continuous capture (a ring of files)')),
        ring.row)),
    h('fieldset', { class: 'group' }, h('legend', {}, 'Limits'), limits.row),
    h('fieldset', { class: 'group' }, h('legend', {}, 'Filters'), filters.element),
    h('div', { class: 'form-actions' }, submit, h('a', { href: '#/captures', class: 'button quiet' }, 'Cancel')),
    h('section', { class: 'preview' }, h('h2', {}, 'The request'), h('p', {}, requestLine),
      h('div', { class: 'code-wrap' }, jsonPre, copyButton(jsonPre)),
      h('h2', {}, 'The same from the command line'), previews));

  formEl.addEventListener('input', changed);
  formEl.addEventListener('change', (event) => {
    if (event.target === type) fillTargets();
    else if (event.target === target) followTarget();
    else if (event.target === loc && chosen()?.location !== loc.value) {
      const there = (type.value === 'AzureVM' ? vms : sets).find((r) => r.location === loc.value);
      if (there) {
        target.value = there.id;
        followTarget();
      }
    }
    changed();
  });
  formEl.addEventListener('submit', async (event) => {
    event.preventDefault();
    validateSoon.cancel();
    if (!name.value.trim()) {
      clearFieldErrors(formEl);
      return name.focus();
    }
    busy = true;
    ready();
    submit.textContent = 'Checking…';
    try {
      if (!(await validate())) return;
      submit.textContent = 'Creating… (waiting for the agent to start it)';
      const id = `${await watcherOf()}/packetCaptures/${encodeURIComponent(name.value.trim())}`;
      const res = await api.call('PUT', id, { body: request(), version: api.V.network });
      const made = await res.json();
      location.hash = href(made.id || id);
    } catch (err) {
      showError(formEl, formError, err, controlFor);
      (formEl.querySelector('[aria-invalid]') || formError).focus?.();
    } finally {
      busy = false;
      submit.textContent = 'Create capture';
      ready();
    }
  });
  formError.tabIndex = -1;
  fillTargets();
  changed();
  return formEl;
}
