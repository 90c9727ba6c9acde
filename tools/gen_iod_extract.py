#!/usr/bin/env python3
"""Generate the compact IOD requirement extract for dicomgate/deid/_iod.py from highdicom's
_standard JSON (itself generated from PS3.3 by innolitics/dicom-standard).

Usage: tools/gen_iod_extract.py HIGHDICOM_STANDARD_DIR [OUT_DIR]
(HIGHDICOM_STANDARD_DIR: highdicom's ``src/highdicom/_standard`` from its sdist, 0.28.2 here);
writes extract.py (modules), extract2.py (IODs) and extract3.py (nested) into OUT_DIR, whose
contents are the tables of dicomgate/deid/_iod.py.
"""
import csv, json, collections, sys
from pathlib import Path
from pydicom.datadict import tag_for_keyword
S = sys.argv[1].rstrip('/') + '/'
OUT = Path(sys.argv[2] if len(sys.argv) > 2 else '.')
m = json.load(open(S + 'module_attribute_map.json'))
iods = json.load(open(S + 'iod_module_map.json'))
sop = json.load(open(S + 'sop_class_iod_map.json'))
rows = {r['keyword']: r for r in csv.DictReader(open(str(Path(__file__).resolve().parent.parent / 'dicomgate/deid/data/ps3.15-table-e1-1.csv'))) if r['keyword']}
OPTS = ['rtn_safe_priv','rtn_uids','rtn_dev_id','rtn_inst_id','rtn_pat_chars','rtn_long_full_dates','rtn_long_modif_dates','clean_desc','clean_struct_cont','clean_graph']
REMOVING = ('X', 'X/Z', 'X/D', 'X/Z/D', 'Z')
cand = {k for k, r in rows.items() if r['basic'] in REMOVING and tag_for_keyword(k) is not None}
def reachable(path):
    # an ancestor sequence removed under every option set: its contents are never walked
    for p in path:
        r = rows.get(p)
        if r is None:
            continue
        codes = {r['basic']} | {r[o] for o in OPTS if r[o]}
        if codes <= {'X'}:
            return False
    return True
mods = collections.defaultdict(dict)
for mod, attrs in m.items():
    for a in attrs:
        k, t = a['keyword'], a['type']
        if k not in cand or not reachable(a['path']):
            continue
        if t in ('1', '1C'):
            t = '1'
        elif t in ('2', '2C'):
            t = '2'
        else:
            continue
        if rows[k]['basic'] == 'Z' and t != '1':
            continue
        key = '/'.join(a['path'] + [k])
        old = mods[mod].get(key)
        if old is None or t < old:
            mods[mod][key] = t
out = []
out.append('_MODULES = """')
for mod in sorted(mods):
    out.append(mod + ': ' + ' '.join(f'{k}={t}' for k, t in sorted(mods[mod].items())))
out.append('"""')
out.append('_IODS = """')
for iod in sorted(iods):
    ms = [x['key'] for x in iods[iod] if x['key'] in mods]
    out.append(iod + ': ' + ' '.join(ms))
out.append('"""')
out.append('_SOP_CLASSES = """')
by_iod = collections.defaultdict(list)
for uid, iod in sop.items():
    by_iod[iod].append(uid)
for iod in sorted(by_iod):
    out.append(iod + ': ' + ' '.join(sorted(by_iod[iod])))
out.append('"""')
text = '\n'.join(out)
open(OUT / 'extract.py', 'w').write(text)
print(len(text), sum(len(v) for v in mods.values()), len(mods))

# -- compact form: nested by parent (IOD-independent), top level by module
nested = {}
top = collections.defaultdict(dict)
for mod, entries in mods.items():
    for key, t in entries.items():
        parts = key.split('/')
        if len(parts) == 1:
            top[mod][parts[0]] = t
        else:
            k = parts[-2] + '/' + parts[-1]
            if k not in nested or t < nested[k]:
                nested[k] = t
out = ['_NESTED = """']
line = ''
for k in sorted(nested):
    item = f'{k}={nested[k]}'
    if len(line) + len(item) + 1 > 95:
        out.append(line.rstrip()); line = ''
    line += item + ' '
out.append(line.rstrip())
out.append('"""')
out.append('_MODULES = """')
for mod in sorted(top):
    out.append(mod + ': ' + ' '.join(f'{k}={t}' for k, t in sorted(top[mod].items())))
out.append('"""')
out.append('_IODS = """')
for iod in sorted(iods):
    ms = [x['key'] for x in iods[iod] if x['key'] in top]
    if ms:
        out.append(iod + ': ' + ' '.join(ms))
out.append('"""')
text = '\n'.join(out)
open(OUT / 'extract2.py', 'w').write(text)
print(len(text), len(nested), len(top), sum(len(v) for v in top.values()))

# -- third form: Patient / Patient Study rules apply to every composite IOD; IODs listed only
#    for their other modules; SOP classes found by name, with exceptions
import re
from pydicom._uid_dict import UID_dictionary
UNIVERSAL = ('patient', 'patient-study')
def has_others(mod):
    # an optional (U/C) module whose top-level attributes are all ones we would remove: removing
    # them removes the module, which is conformant
    own = {a['keyword'] for a in m[mod] if not a['path']}
    return bool(own - set(top[mod]))
dropped = [mod for mod in top if not has_others(mod)]
print('modules that are only removable attributes:', dropped)
def slug(uid):
    e = UID_dictionary.get(uid)
    if not e: return None
    n = re.sub(r' Storage.*$', '', e[0])
    n = re.sub(r'[^a-z0-9]+', '-', n.lower()).strip('-')
    return re.sub(r'-waveform$', '', n)
used = set(UNIVERSAL) | {x['key'] for i in iods.values() for x in i if x['key'] in top and (x['usage'] == 'M' or has_others(x['key']))}
out = ['_MODULES = """']
for mod in sorted(top):
    if mod not in used: continue
    out.append(mod + ': ' + ' '.join(f'{k}={t}' for k, t in sorted(top[mod].items())))
out.append('"""')
out.append('_IODS = """')
listed = set()
for iod in sorted(iods):
    ms = [x['key'] for x in iods[iod] if x['key'] in top and x['key'] not in UNIVERSAL
          and (x['usage'] == 'M' or has_others(x['key']))]
    if ms:
        listed.add(iod)
        line = iod + ':'
        for mm in ms:
            if len(line) + len(mm) + 1 > 95:
                out.append(line); line = '   '
            line += ' ' + mm
        out.append(line)
out.append('"""')
exc = {u: i for u, i in sop.items() if i in listed and slug(u) != i}
out.append('_SOP_CLASS_IOD = {')
for u, i in sorted(exc.items()):
    out.append(f'    "{u}": "{i}",')
out.append('}')
text = '\n'.join(out)
open(OUT / 'extract3.py', 'w').write(text)
print(len(text))
