// Hosts: the VMs and scale sets whose agents registered, and (admins)
// enrolling a new host or scale set, as `vm/vmss extension set` does.

import {
  h, replace, load, table, time, ago, groupOf, loading, field, options, codeBlock, notice, number, showError,
} from './dom.js';
import * as api from './api.js';

const REFRESH_SECONDS = 15;

export default function hosts(root, ctx) {
  const body = h('div');
  root.append(h('h1', {}, 'Hosts'), body);
  if (ctx.can('admin')) root.append(enrollSection(ctx.signal));
  const tables = async () => {
    const [vms, sets] = await Promise.all([api.vms(ctx.signal), api.scaleSets(ctx.signal)]);
    const members = await api.mapLimit(sets, 4, (set) => api.instances(set, ctx.signal));
    return [vmTable(vms), setTable(sets, members)];
  };
  load(body, 'Could not list the hosts', tables, ctx.signal);
  // A refresh that fails keeps what it showed.
  const timer = setInterval(() => tables().then((nodes) => replace(body, nodes), () => {}), REFRESH_SECONDS * 1000);
  ctx.signal.addEventListener('abort', () => clearInterval(timer));
}

const HEADERS = ['Name', 'Resource group', 'Location', 'Agent', 'Version', 'Interfaces', 'Tags'];

function vmTable(vms) {
  if (!vms.length) {
    return h('section', {}, h('h2', {}, 'Virtual machines'), h('p', { class: 'empty', 'data-test': 'empty' },
      'No hosts yet — enroll one below (admins), or run ', h('code', {}, 'netwatch vm extension set'),
      ' and the command it prints on the host.'));
  }
  return h('section', {}, h('h2', {}, `Virtual machines (${vms.length})`),
    table(HEADERS, vms.map((vm) => hostRow(vm, 'host-row', vm.name))));
}

function setTable(sets, members) {
  if (!sets.length) return null;
  const rows = sets.flatMap((set, i) => {
    const hosts = members[i];
    const up = hosts.filter((vm) => vm.properties?.netwatch?.connected).length;
    return [
      h('tr', { 'data-test': 'scale-set-row', 'data-name': set.name, class: 'parent' },
        h('td', {}, h('strong', {}, set.name), h('div', { class: 'muted' }, 'scale set')),
        h('td', {}, groupOf(set.id)), h('td', {}, set.location),
        h('td', {}, `${hosts.length} instance${hosts.length === 1 ? '' : 's'}, ${up} up`),
        h('td', {}), h('td', {}), h('td', {}, tags(set.tags))),
      ...hosts.map((vm) => hostRow(vm, 'instance-row', vm.name, vm.instanceId)),
    ];
  });
  return h('section', {}, h('h2', {}, `Scale sets (${sets.length})`), table(HEADERS, rows));
}

function hostRow(vm, test, name, instance) {
  const nw = vm.properties?.netwatch || {};
  const up = !!nw.connected;
  return h('tr', { 'data-test': test, 'data-name': name, class: instance == null ? null : 'child' },
    h('td', {}, h('strong', {}, name),
      instance != null && h('div', { class: 'muted' }, 'instance ' + instance),
      nw.hostname && nw.hostname !== name && h('div', { class: 'muted' }, nw.hostname)),
    h('td', {}, groupOf(vm.id)),
    h('td', {}, vm.location),
    h('td', { 'data-field': 'connected' },
      h('span', { class: 'dot ' + (up ? 'on' : 'off') }, up ? 'connected' : 'offline'),
      !up && h('div', { class: 'muted' }, nw.lastSeen ? ['last heard ', time(nw.lastSeen, ago(nw.lastSeen))] : 'never heard from')),
    h('td', { 'data-field': 'version' }, nw.agentVersion || '—'),
    h('td', { 'data-field': 'interfaces' }, interfaces(nw.interfaces)),
    h('td', { 'data-field': 'tags' }, tags(vm.tags)));
}

function interfaces(list) {
  if (!Array.isArray(list) || !list.length) return h('span', { class: 'muted' }, '—');
  return h('ul', { class: 'plain' }, list.map((nic) => h('li', {},
    h('code', {}, nic.name), ' ', (nic.addresses || []).join(', ') || h('span', { class: 'muted' }, 'no address'))));
}

function tags(object) {
  const entries = Object.entries(object || {});
  if (!entries.length) return h('span', { class: 'muted' }, '—');
  return h('ul', { class: 'tags' }, entries.map(([k, v]) => h('li', {}, `${k}=${v}`)));
}

// ---- enrolling (admin) ----

function enrollSection(signal) {
  const locs = api.locations(signal).catch(() => []);
  return h('section', { class: 'enroll' }, h('h2', {}, 'Enroll'),
    h('p', { class: 'muted' }, 'netwatch cannot reach into a host: enrolling gives the one-line command to run there, ' +
      'as root. It installs the agent as a service, enrolled with a token made for it.'),
    h('div', { class: 'columns' }, enrollForm(false, locs), enrollForm(true, locs)));
}

function enrollForm(isSet, locs) {
  const p = isSet ? 'enroll-set' : 'enroll-vm';
  const input = (id, attrs) => h('input', { id: `${p}-${id}`, autocomplete: 'off', spellcheck: 'false', ...attrs });
  const name = input('name', { required: true });
  const group = input('group', { required: true, placeholder: 'netwatch' });
  const location = h('select', { id: p + '-location' }, h('option', { value: '' }, 'The controller’s first location'));
  locs.then((list) => location.append(...options(list.map((l) => [l.name, l.displayName || l.name]))));
  const expires = isSet && input('expires', { inputmode: 'numeric', placeholder: '86400 (a day)' });
  const uses = isSet && input('uses', { inputmode: 'numeric', placeholder: 'any number' });
  const error = h('p', { class: 'alert error', role: 'alert', hidden: true });
  const out = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit', class: 'primary' }, isSet ? 'Enroll scale set' : 'Enroll host');
  const form = h('form', { class: 'card' },
    h('h3', {}, isSet ? 'Enroll a scale set' : 'Enroll a host'), error,
    field(isSet ? 'Scale set name' : 'VM name', name),
    field('Resource group', group),
    field('Location', location),
    isSet && field('Key expires in (seconds)', expires, 'At most 2592000 (30 days).'),
    isSet && field('Hosts that may join with the key', uses),
    submit, out);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    showError(form, error, null);
    out.replaceChildren(loading('Enrolling…'));
    try {
      const kind = isSet ? 'virtualMachineScaleSets' : 'virtualMachines';
      const holder = `/subscriptions/${await api.sub()}/resourceGroups/${encodeURIComponent(group.value.trim())}` +
        `/providers/Microsoft.Compute/${kind}/${encodeURIComponent(name.value.trim())}`;
      const body = { properties: {
        publisher: 'Microsoft.Azure.NetworkWatcher', type: 'NetworkWatcherAgentLinux',
        typeHandlerVersion: '1.4', autoUpgradeMinorVersion: true,
      } };
      if (location.value) body.location = location.value;
      if (isSet && (expires.value || uses.value)) {
        body.properties.settings = {};
        if (expires.value) body.properties.settings.keyExpiresInSeconds = number(expires.value);
        if (uses.value) body.properties.settings.keyMaxUses = number(uses.value);
      }
      const res = await api.call('PUT', holder + '/extensions/NetworkWatcherAgentLinux', { body, version: api.V.extension });
      const enrollment = (await res.json()).properties?.netwatch?.enrollment;
      out.replaceChildren(enrollment ? enrolled(enrollment, isSet, name.value.trim())
        : notice(`${name.value.trim()} already has its agent, enrolled: nothing to install.`, 'ok'));
    } catch (err) {
      out.replaceChildren();
      showError(form, error, err, (target) =>
        ({ location, 'properties.settings.keyExpiresInSeconds': expires, 'properties.settings.keyMaxUses': uses }[target]
          || (/name$/i.test(target) ? name : /group/i.test(target) ? group : null)));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function enrolled(e, isSet, name) {
  const uses = e.maxUses == null ? 'by any number of hosts' : e.maxUses === 1 ? 'by one host' : `by up to ${e.maxUses} hosts`;
  return h('div', { class: 'enrollment' },
    h('p', {}, isSet ? `Run this on every host of scale set ${name}, as root, to join it (the key can be used ${uses}` :
      'Run this on the host, as root (the token can be used once', e.expiresOn ? [', until ', time(e.expiresOn)] : '', '):'),
    codeBlock(e.command || '', isSet ? 'enroll-set-command' : 'enroll-vm-command'),
    e.foregroundCommand && [h('p', {}, 'Or run the agent in the foreground instead (no service):'), codeBlock(e.foregroundCommand)],
    h('p', { class: 'muted' }, 'This is shown once: the controller keeps only a digest of the token.'));
}
