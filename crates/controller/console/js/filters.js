// The editor of Azure's packet-capture filters (captures and flight
// recorders): a row per filter, Add and Remove. The page checks the values
// with the API, which names the filter and field at fault.

import { h, field, options } from './dom.js';

export const FIELDS = [
  ['localIPAddress', 'Local IP', '10.0.0.4, 10.0.0.1-10.0.0.9 or a;b'],
  ['localPort', 'Local port', '443, 8000-8080 or 80;443'],
  ['remoteIPAddress', 'Remote IP', '192.0.2.7'],
  ['remotePort', 'Remote port', '53'],
];
let made = 0;

/** `changed` runs after every edit. `id` names the Add button. */
export function filterEditor(changed, id = 'add-filter') {
  const rows = h('div', { class: 'filter-rows' });
  const empty = h('p', { class: 'muted' }, 'No filters: every packet is kept. A packet is kept when any filter matches it.');
  const addButton = h('button', { type: 'button', id, class: 'quiet' }, '+ Add filter');

  const renumber = () => {
    [...rows.children].forEach((row, i) => { row.querySelector('legend').textContent = `Filter ${i + 1}`; });
    empty.hidden = rows.children.length > 0;
  };
  const add = (f = {}) => {
    const p = `${id}-${++made}`;
    const protocol = h('select', { id: p + '-protocol', 'data-field': 'protocol' },
      options([['Any', 'Any'], ['TCP', 'TCP'], ['UDP', 'UDP']]));
    protocol.value = ['TCP', 'UDP'].find((x) => x === String(f.protocol || '').toUpperCase()) || 'Any';
    const row = h('fieldset', { class: 'filter-row', 'data-test': 'filter-row' }, h('legend', {}),
      field('Protocol', protocol),
      FIELDS.map(([name, text, example]) => field(text, h('input', {
        id: `${p}-${name}`, 'data-field': name, value: f[name] || '', placeholder: example, autocomplete: 'off', spellcheck: 'false',
      }))),
      h('button', { type: 'button', class: 'quiet small', 'data-action': 'remove-filter' }, 'Remove'));
    row.lastChild.addEventListener('click', () => {
      const next = row.nextElementSibling || row.previousElementSibling;
      row.remove();
      renumber();
      (next ? next.querySelector('select') : addButton).focus();
      changed();
    });
    rows.append(row);
    renumber();
    return row;
  };
  addButton.addEventListener('click', () => {
    add().querySelector('select').focus();
    changed();
  });
  renumber();

  return {
    element: h('div', { class: 'filters' }, empty, rows, addButton),
    /** The filters as the API takes them: protocol always, the other fields when given. */
    value: () => [...rows.children].map((row) => {
      const f = {};
      for (const control of row.querySelectorAll('[data-field]')) if (control.value !== '') f[control.dataset.field] = control.value;
      return f;
    }),
    set: (list) => { rows.replaceChildren(); (list || []).forEach((f) => add(f)); renumber(); },
    /** The control of filter `i`'s `name` (for errors the API names), or the Add button. */
    control: (i, name) => rows.children[i]?.querySelector(`[data-field="${name || 'protocol'}"]`) || addButton,
  };
}

/** The control an API error's target (`properties.filters[1].localPort`) names, if a filter's. */
export function filterControl(editor, target) {
  const m = /^properties\.filters\[(\d+)\](?:\.(\w+))?/.exec(target);
  return m ? editor.control(Number(m[1]), m[2]) : target === 'properties.filters' ? editor.control(-1) : null;
}
