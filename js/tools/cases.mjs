// Helpers shared by js/test/ and write_from_json.mjs: the shared test vectors
// (tests/vectors/writer_cases.json, made by tests/vectors/make_vectors.py from the Python writer)
// and the input forms the writer accepts.

import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';

export const VECTORS = path.resolve(path.dirname(fileURLToPath(import.meta.url)),
  '../../tests/vectors/writer_cases.json');

export function loadVectors(file = VECTORS) {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

const SPECIAL = { NaN, Infinity, '-Infinity': -Infinity };

/** JSON value -> JS value, with the strings "NaN", "Infinity", "-Infinity" as numbers. */
export function decode(x) {
  if (typeof x === 'string') return x in SPECIAL ? SPECIAL[x] : x;
  if (Array.isArray(x)) return x.map(decode);
  if (x && typeof x === 'object') {
    return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, decode(v)]));
  }
  return x;
}

/** An episode in one of the input forms the writer accepts (same data, same bytes expected):
 *   plain   arrays of numbers (as in the JSON);
 *   typed   obs rows as Float32Array, mask rows as Uint8Array, legal rows as Int32Array,
 *           actions Int32Array, rewards/values/logprobs Float64Array, finalObs Float32Array;
 *   flat    obs one Float64Array (needs obsDim), mask one flat Uint8Array;
 *   flat32  obs one Float32Array, mask rows of booleans. */
export function inForm(ep, form, obsDim) {
  const out = { ...ep };
  if (form === 'plain') return out;
  const rows2 = (rows, Ctor) => rows.map((r) => Ctor.from(r, Number));
  if (form === 'typed') {
    out.obs = rows2(ep.obs, Float32Array);
    if (ep.mask) out.mask = rows2(ep.mask, Uint8Array);
    if (ep.legal) out.legal = rows2(ep.legal, Int32Array);
    out.actions = Int32Array.from(ep.actions);
    out.rewards = Float64Array.from(ep.rewards);
    if (ep.values) out.values = Float64Array.from(ep.values);
    if (ep.logprobs) out.logprobs = Float64Array.from(ep.logprobs);
    if (ep.finalObs) out.finalObs = Float32Array.from(ep.finalObs);
    return out;
  }
  if (form === 'flat' || form === 'flat32') {
    const Ctor = form === 'flat' ? Float64Array : Float32Array;
    const obs = new Ctor(ep.obs.length * obsDim);
    ep.obs.forEach((r, t) => obs.set(r, t * obsDim));
    out.obs = obs;
    if (ep.mask && form === 'flat') {
      const A = ep.mask[0].length;
      const m = new Uint8Array(ep.mask.length * A);
      ep.mask.forEach((r, t) => m.set(r.map(Number), t * A));
      out.mask = m;
    } else if (ep.mask) {
      out.mask = ep.mask.map((r) => r.map((v) => Boolean(v)));
    }
    if (ep.finalObs) out.finalObs = Ctor.from(ep.finalObs);
    return out;
  }
  throw new Error(`unknown form ${form}`);
}

export const FORMS = ['plain', 'typed', 'flat', 'flat32'];

/** The writer options of a case for a form (flat obs needs obsDim, a flat mask nActions). */
export function formOptions(options, form, episodes) {
  const out = { ...options };
  if ((form === 'flat' || form === 'flat32') && out.obsDim === undefined) {
    out.obsDim = episodes[0].obs[0].length;
  }
  if (form === 'flat' && out.nActions === undefined && episodes[0].mask) {
    out.nActions = episodes[0].mask[0].length;
  }
  return out;
}

/** file name -> SHA-256 hex of every file of a batch folder but meta.json. */
export function digest(batch) {
  const out = {};
  for (const name of fs.readdirSync(batch).sort()) {
    if (name === 'meta.json') continue;
    out[name] = crypto.createHash('sha256').update(fs.readFileSync(path.join(batch, name)))
      .digest('hex');
  }
  return out;
}

/** meta.json text with createdAt and the producer's values blanked (as make_vectors.py does). */
export function normalizedMeta(text) {
  const meta = JSON.parse(text);
  let out = text.split('\n').map((line) => (line.startsWith(' "createdAt": ')
    ? ' "createdAt": "*",' : line)).join('\n');
  if (!out.endsWith('\n')) out += '\n';
  if (meta.producer) {
    for (const key of ['fastrl', 'backend']) {
      out = out.replace(`  "${key}": ${JSON.stringify(meta.producer[key])}`, `  "${key}": "*"`);
    }
  }
  return out;
}
