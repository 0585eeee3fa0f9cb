// fastrl batch writer for Node.js (>= 18): one ES module, no dependencies.
//
// Writes the fastrl batch format v1 (docs/FORMAT.md) with the same column bytes and the same
// meta.json keys as Python's `fastrl.BatchWriter`, for the same episodes. See js/README.md.
//
//   import { BatchWriter } from './batch_writer.mjs';
//   const w = new BatchWriter('data/binary', { nActions: 6 });
//   w.addEpisode({ obs, actions, rewards, legal });   // throws EpisodeError on bad data
//   const batchPath = w.close();                      // synchronous; null when no episode
//
// Every method is synchronous: close() returns the batch path, not a promise.
//
// Memory stays bounded: episodes are checked and packed into column buffers of `flushBytes`
// (default 8 MiB, two sets), which are appended to the column files whenever one fills. With
// `writeThread` (default) the appends run on a worker thread while the caller's thread packs the
// next buffer (and computes the CRC-32s); the caller waits only when both buffers are busy.
//
// How a batch is committed (as Python's writer does, except for the lock):
//   the files live in a hidden folder `<root>/.fastrl-tmp-batch-<ms>-<pid>-<8 hex>`; close()
//   writes `episode_index.int64.bin`, then `meta.json` last, fsyncs (unless fsync: false), and
//   renames the folder to `batch_<ms>`, ms = max(Date.now(), last committed + 1), the last one
//   read from `<root>/.fastrl.lock` (ASCII digits), where the new one is then written back.
//   Python writers serialize that step with flock(2) on `.fastrl.lock`. Node has no flock, so this
//   writer takes no lock: it skips names that exist (fs.lstatSync: an existsSync that also sees
//   dangling links) and relies on rename(2) failing (EEXIST/ENOTEMPTY: it tries ms+1), which
//   keeps names unique. With Python and Node
//   writers committing in the same milliseconds, names may then not sort in exact commit order.
//   The temporary folder has no `.owner` file (Node cannot flock one); Python's cleaner leaves
//   such a folder alone while the process named in it (<pid>) is alive, and removes it once that
//   process is gone. An unclosed writer removes its folder when the process exits normally.
//   Committed files are read-only (0444), as Python leaves them.

import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import zlib from 'node:zlib';
import { Worker } from 'node:worker_threads';

export const FASTRL_VERSION = '0.1.0'; // the fastrl version whose batches this module writes
export const FORMAT_VERSION = 1;
export const MAX_DIM = 1 << 24;
export const DEFAULT_FLUSH_BYTES = 8 * 1024 * 1024;

const TMP_PREFIX = '.fastrl-tmp-';
const BATCH_PREFIX = 'batch_';
const LOCK_FILE = '.fastrl.lock';
const META_FILE = 'meta.json';
const READ_ONLY = 0o444; // committed files are read-only, as Python's writer leaves them

// Typed arrays use the host byte order and the format is little-endian. Rather than byte-swap in
// every hot loop, this module refuses to write on a big-endian host.
export const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// name -> [file, dtype (NumPy str), width key]; the order is the order of meta.json `columns`.
const COLUMNS = {
  obs: ['obs.float32.bin', '<f4', 'obsDim'],
  actions: ['actions.int32.bin', '<i4', null],
  rewards: ['rewards.float32.bin', '<f4', null],
  masks: ['masks.uint8.bin', '|u1', 'maskDim'],
  dones: ['dones.uint8.bin', '|u1', null],
  values: ['values.float32.bin', '<f4', null],
  logprobs: ['logprobs.float32.bin', '<f4', null],
  truncated: ['truncated.uint8.bin', '|u1', null],
  final_obs: ['final_obs.float32.bin', '<f4', 'obsDim'], // one row per episode
  episode_index: ['episode_index.int64.bin', '<i8', null], // episodes + 1 rows
};
const PER_ROW = ['obs', 'actions', 'rewards', 'masks', 'dones', 'values', 'logprobs',
  'truncated'];

const EPISODE_FIELDS = ['obs', 'actions', 'rewards', 'mask', 'legal', 'values', 'logprobs',
  'truncated', 'finalObs'];
const OPTIONS = ['nActions', 'obsDim', 'maskPad', 'flushBytes', 'fsync', 'checksum', 'meta',
  'writeThread'];

// ---------------------------------------------------------------------------------------------
// Errors

/** A rejected episode. `episode`: its 0-based index in this writer (the number of episodes
 * accepted before it); `step`: 0-based, or null; `reason`. The message reads like Python's
 * EpisodeError: "episode 3, step 7: action 9 is outside [0, 6)". */
export class EpisodeError extends Error {
  constructor(reason, { episode = null, step = null } = {}) {
    const where = [];
    if (episode !== null) where.push(`episode ${episode}`);
    if (step !== null) where.push(`step ${step}`);
    super((where.length ? where.join(', ') + ': ' : '') + reason);
    this.name = 'EpisodeError';
    this.reason = reason;
    this.episode = episode;
    this.step = step;
  }
}

// ---------------------------------------------------------------------------------------------
// CRC-32 (zlib's polynomial 0xEDB88320: the values of Python's zlib.crc32)

const CRC_TABLES = (() => {
  const t = new Int32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n];
    for (let k = 1; k < 8; k++) {
      c = t[c & 0xff] ^ (c >>> 8);
      t[k * 256 + n] = c;
    }
  }
  return t;
})();

/** CRC-32 of `bytes` (a Uint8Array) continuing from `crc` (0 to start), table-driven,
 * slicing-by-8. Returns an unsigned 32-bit integer, like zlib.crc32. */
export function crc32js(bytes, crc = 0) {
  const T = CRC_TABLES;
  let c = ~crc | 0;
  const n = bytes.length;
  let i = 0;
  const end8 = n - (n & 7);
  for (; i < end8; i += 8) {
    const a = c ^ (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24));
    const b = bytes[i + 4] | (bytes[i + 5] << 8) | (bytes[i + 6] << 16) | (bytes[i + 7] << 24);
    c = T[1792 + (a & 0xff)] ^ T[1536 + ((a >>> 8) & 0xff)] ^ T[1280 + ((a >>> 16) & 0xff)]
      ^ T[1024 + (a >>> 24)] ^ T[768 + (b & 0xff)] ^ T[512 + ((b >>> 8) & 0xff)]
      ^ T[256 + ((b >>> 16) & 0xff)] ^ T[b >>> 24];
  }
  for (; i < n; i++) c = T[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

// Node's zlib.crc32 runs about 1.7x faster over 8 KiB pieces than over one long buffer (4.0
// against 2.3 GB/s measured on Node 20, x86-64, 200 MB; same values): feed it pieces.
const CRC_PIECE = 8192;

/** CRC-32 of `data` (any ArrayBuffer view) with Node's native zlib.crc32, in CRC_PIECE
 * pieces. */
function crc32native(data, crc = 0) {
  const bytes = data instanceof Uint8Array ? data
    : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  let c = crc;
  const n = bytes.length;
  if (n === 0) return crc >>> 0;
  if (n <= CRC_PIECE) return zlib.crc32(bytes, c) >>> 0;
  for (let o = 0; o < n; o += CRC_PIECE) c = zlib.crc32(bytes.subarray(o, o + CRC_PIECE), c);
  return c >>> 0;
}

/** The CRC-32 used for meta.json `checksums`: Node's native zlib.crc32 where it exists (Node
 * >= 20.15 / 22.2, about twice as fast), else crc32js. Same values. */
export const crc32 = typeof zlib.crc32 === 'function' ? crc32native : crc32js;

// ---------------------------------------------------------------------------------------------
// meta.json as Python writes it: json.dump(indent=1), Python's float repr, NumPy's sums

/** A number Python holds as a float (printed "1.0", not "1"). */
class PyFloat {
  constructor(value) { this.value = value; }
}

/** repr() of a Python float: the shortest round-trip digits, in exponent form when the decimal
 * exponent is < -4 or >= 16. */
export function pyFloatRepr(x) {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mant, expText] = Math.abs(x).toExponential().split('e'); // shortest round-trip digits
  const digits = mant.replace('.', '');
  const exp = Number(expText);
  const decpt = exp + 1; // |x| = 0.DIGITS * 10^decpt
  let s;
  if (decpt <= -4 || decpt > 16) {
    s = digits[0] + (digits.length > 1 ? '.' + digits.slice(1) : '') + 'e'
      + (exp < 0 ? '-' : '+') + String(Math.abs(exp)).padStart(2, '0');
  } else if (decpt <= 0) {
    s = '0.' + '0'.repeat(-decpt) + digits;
  } else if (decpt >= digits.length) {
    s = digits + '0'.repeat(decpt - digits.length) + '.0';
  } else {
    s = digits.slice(0, decpt) + '.' + digits.slice(decpt);
  }
  return x < 0 ? '-' + s : s;
}

function pyString(s) {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += '\\\\';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x09) out += '\\t';
    else if (c === 0x08) out += '\\b';
    else if (c === 0x0c) out += '\\f';
    else if (c < 0x20 || c > 0x7e) out += '\\u' + c.toString(16).padStart(4, '0');
    else out += s[i];
  }
  return out + '"';
}

/** JSON text as Python's json.dumps(v, indent=1) gives it (ensure_ascii, ": " and ","). */
export function pyJson(v, indent = '') {
  if (v === null || v === undefined) return 'null';
  if (v instanceof PyFloat) return pyFloatRepr(v.value);
  // JS has one number type: integers up to 2^53 are written as ints, others as Python floats
  if (typeof v === 'number') return Number.isSafeInteger(v) ? String(v) : pyFloatRepr(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'string') return pyString(v);
  const inner = indent + ' ';
  if (Array.isArray(v)) {
    if (!v.length) return '[]';
    return '[\n' + v.map((x) => inner + pyJson(x, inner)).join(',\n') + '\n' + indent + ']';
  }
  const keys = Object.keys(v);
  if (!keys.length) return '{}';
  return '{\n' + keys.map((k) => inner + pyString(k) + ': ' + pyJson(v[k], inner)).join(',\n')
    + '\n' + indent + '}';
}

/** NumPy's pairwise summation of the float64 values a[lo .. lo+n) (np.add.reduce's order). */
function pairwiseSum(a, lo, n) {
  if (n < 8) {
    let res = 0.0;
    for (let i = 0; i < n; i++) res += a[lo + i];
    return res;
  }
  if (n <= 128) {
    const r = [a[lo], a[lo + 1], a[lo + 2], a[lo + 3], a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]];
    let i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (let j = 0; j < 8; j++) r[j] += a[lo + i + j];
    }
    let res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) res += a[lo + i];
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return pairwiseSum(a, lo, n2) + pairwiseSum(a, lo + n2, n - n2);
}

/** An episode's return as Python's writer computes it: float32 rewards widened to float64 and
 * summed by np.add.reduceat (the first value, plus the pairwise sum of the others). */
function episodeReturn(rewards32, lo, n) {
  return n === 1 ? rewards32[lo] : rewards32[lo] + pairwiseSum(rewards32, lo + 1, n - 1);
}

// ---------------------------------------------------------------------------------------------
// Small helpers

function isTyped(x) {
  return ArrayBuffer.isView(x) && !(x instanceof DataView);
}

function isBigIntArray(x) {
  return x instanceof BigInt64Array || x instanceof BigUint64Array;
}

/** An array or a typed array of numbers (not BigInts). */
function isNumberList(x) {
  return Array.isArray(x) || (isTyped(x) && !isBigIntArray(x));
}

function fmtNonFinite(v) {
  if (Number.isNaN(v)) return 'NaN';
  return v > 0 ? '+inf' : '-inf';
}

function describe(v) {
  if (v === undefined) return 'undefined';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'bigint') return `${v}n`;
  if (v === null || typeof v !== 'object') return String(v);
  return Array.isArray(v) ? 'an array' : `a ${v.constructor ? v.constructor.name : 'object'}`;
}

function checkDim(name, v) {
  if (v === undefined || v === null) return null;
  if (!Number.isInteger(v) || v < 1 || v > MAX_DIM) {
    throw new RangeError(`${name} must be an integer in [1, ${MAX_DIM}], got ${describe(v)}`);
  }
  return v;
}

function writeAll(fd, bytes) {
  let off = 0;
  while (off < bytes.length) off += fs.writeSync(fd, bytes, off, bytes.length - off);
}

function fsyncPath(p) {
  let fd;
  try {
    fd = fs.openSync(p, 'r');
  } catch {
    return;
  }
  try {
    fs.fsyncSync(fd);
  } catch {
    // some file systems refuse fsync on a folder; nothing more can be done
  } finally {
    fs.closeSync(fd);
  }
}

function bytesOf(typed, n) {
  return new Uint8Array(typed.buffer, typed.byteOffset, n * typed.BYTES_PER_ELEMENT);
}

/** Growable Float64Array (episode lengths and returns). */
class F64List {
  constructor() { this.a = new Float64Array(1024); this.n = 0; }
  push(v) {
    if (this.n === this.a.length) {
      const b = new Float64Array(this.a.length * 2);
      b.set(this.a);
      this.a = b;
    }
    this.a[this.n++] = v;
  }
}

// ---------------------------------------------------------------------------------------------
// Checking and packing one episode

/** Shape checks (Python's normalize_episode): everything but the values themselves, which
 * packEpisode checks as it copies them. Returns the episode with its input forms resolved. */
function normalizeEpisode(ep, e, lay) {
  const err = (reason, step = null) => new EpisodeError(reason, { episode: e, step });
  if (ep === null || typeof ep !== 'object' || Array.isArray(ep)) {
    throw err('an episode must be an object { obs, actions, rewards, ... }');
  }
  for (const k of Object.keys(ep)) {
    if (!EPISODE_FIELDS.includes(k)) {
      throw err(`unknown episode field ${JSON.stringify(k)} `
        + `(fields: ${EPISODE_FIELDS.join(', ')})`);
    }
  }
  const { obs, actions, rewards } = ep;
  const values = ep.values ?? null;
  const logprobs = ep.logprobs ?? null;
  const mask = ep.mask ?? null;
  const legal = ep.legal ?? null;
  const finalObs = ep.finalObs ?? null;
  const D = lay.obsDim;
  const A = lay.nActions;
  if (!isNumberList(actions)) throw err('actions must be an array with one action per step');
  const T = actions.length;
  if (T === 0) throw err('episode has no steps');
  const vector = (x, name) => {
    if (!isNumberList(x)) throw err(`${name} must be an array of numbers`);
    if (x.length !== T) throw err(`${name} has ${x.length} values for ${T} steps`);
  };
  vector(rewards, 'rewards');

  if (obs === undefined || obs === null) throw err('obs is missing');
  let obsForm;
  if (isTyped(obs)) {
    if (isBigIntArray(obs)) throw err('obs must be numbers, not BigInts');
    if (obs.length !== T * D) {
      throw err(`obs has ${obs.length} values, expected steps*obsDim = ${T}*${D} = ${T * D}`);
    }
    obsForm = obs instanceof Float32Array ? 'flat32' : 'flat';
  } else if (Array.isArray(obs)) {
    if (obs.length !== T) throw err(`obs has ${obs.length} rows for ${T} steps`);
    for (let t = 0; t < T; t++) {
      const row = obs[t];
      if (!isNumberList(row)) throw err(`obs row is ${describe(row)}, not an array of numbers`, t);
      if (row.length !== D) {
        throw err(`obs rows have ${row.length} values, expected obsDim=${D}`, t);
      }
    }
    obsForm = 'rows';
  } else {
    throw err('obs must be T rows of numbers or one flat typed array');
  }

  if (mask !== null && legal !== null) {
    throw err('give one of mask (dense 0/1 per action) or legal (ids per step), not both');
  }
  let maskForm = 'none';
  if (mask !== null) {
    if (isTyped(mask)) {
      if (isBigIntArray(mask)) throw err('mask must be 0/1 or booleans');
      if (mask.length !== T * A) {
        throw err(`mask has ${mask.length} values, expected steps*numActions = ${T}*${A} = `
          + `${T * A}`);
      }
      maskForm = 'flat';
    } else if (Array.isArray(mask)) {
      if (mask.length !== T) throw err(`mask has ${mask.length} rows for ${T} steps`);
      for (let t = 0; t < T; t++) {
        const row = mask[t];
        if (!isNumberList(row)) throw err(`mask row is ${describe(row)}, not an array of 0/1`, t);
        if (row.length !== A) {
          throw err(`mask rows have ${row.length} entries, expected numActions=${A}`, t);
        }
      }
      maskForm = 'rows';
    } else {
      throw err('mask must be T rows of numActions 0/1 or booleans');
    }
  } else if (legal !== null) {
    if (!Array.isArray(legal)) {
      throw err('legal must be an array with one array of legal action ids per step');
    }
    if (legal.length !== T) throw err(`legal has ${legal.length} entries for ${T} steps`);
    for (let t = 0; t < T; t++) {
      if (!isNumberList(legal[t])) throw err('legal must be a list of action ids', t);
    }
    maskForm = 'legal';
  }

  for (const [name, col, expect] of [['values', values, lay.hasValues],
    ['logprobs', logprobs, lay.hasLogprobs], ['final_obs', finalObs, lay.hasFinalObs]]) {
    if (expect && col === null) {
      throw err(`${name} missing, but earlier episodes of this batch have ${name}`);
    }
    if (!expect && col !== null) {
      throw err(`${name} given, but earlier episodes of this batch have none`);
    }
  }
  if (values !== null) vector(values, 'values');
  if (logprobs !== null) vector(logprobs, 'logprobs');
  if (finalObs !== null) {
    if (!isNumberList(finalObs)) throw err('final_obs must be an array of obsDim numbers');
    if (finalObs.length !== D) {
      throw err(`final_obs must have shape (${D},), got (${finalObs.length},)`);
    }
  }
  let truncated = ep.truncated ?? false;
  if (truncated === 0 || truncated === 1) truncated = truncated === 1;
  if (typeof truncated !== 'boolean') {
    throw err(`truncated must be true or false, got ${describe(truncated)}`);
  }
  return { T, obs, obsForm, actions, rewards, mask, legal, maskForm, values, logprobs,
    truncated, finalObs };
}

/** Copy T*D observations into out[o0 ..] as float32 and return [step, col, reason] of the
 * first value that is not a finite number after rounding ([-1, -1, null] when none).
 * `check(a, o0, n)` tells whether a[o0 .. o0+n) holds a non-finite value. */
function packObs(obs, form, T, D, out, o0, check) {
  let rows = T; // rows copied whole
  let why = null;
  let whyCol = -1;
  if (form === 'flat32') {
    out.set(obs, o0);
  } else if (form === 'flat') {
    const n = T * D;
    for (let i = 0; i < n; i++) out[o0 + i] = obs[i]; // rounds to nearest even, like NumPy
  } else {
    copy: for (let t = 0; t < T; t++) {
      const row = obs[t];
      const off = o0 + t * D;
      if (row instanceof Float32Array) {
        out.set(row, off);
      } else if (Array.isArray(row)) {
        for (let j = 0; j < D; j++) {
          const v = row[j];
          if (typeof v !== 'number') {
            [rows, whyCol, why] = [t, j, `obs[${j}] is ${describe(v)}, not a number`];
            break copy;
          }
          out[off + j] = v;
        }
      } else {
        for (let j = 0; j < D; j++) out[off + j] = row[j];
      }
    }
  }
  const bad = firstNonFinite(out, o0, rows * D, D, check);
  if (bad[0] >= 0 || why === null) return bad;
  return [rows, whyCol, why];
}

const ALL_FINITE = [-1, -1, null];

/** [row, col] of the first non-finite value of a[o0 .. o0+n) in rows of D, or ALL_FINITE. */
function firstNonFinite(a, o0, n, D, check) {
  if (!n || !check(a, o0, n)) return ALL_FINITE;
  for (let i = 0; i < n; i++) {
    const v = a[o0 + i];
    if (v - v !== 0) return [Math.floor(i / D), i % D, null];
  }
  return ALL_FINITE;
}

/** Whether a[o0 .. o0+n) holds NaN or an infinity (v*0 is 0, or NaN for those). */
function anyNonFiniteJs(a, o0, n) {
  let acc0 = 0;
  let acc1 = 0;
  let i = 0;
  for (const end = n - (n & 1); i < end; i += 2) {
    acc0 += a[o0 + i] * 0;
    acc1 += a[o0 + i + 1] * 0;
  }
  if (i < n) acc0 += a[o0 + i] * 0;
  return acc0 + acc1 !== 0;
}

// The same test in WebAssembly SIMD (4 floats at a time: exponent bits all ones), several times
// faster than any JS loop; used on the obs buffers, which live in its shared memory.
// (func (param $p i32) (param $n i32) (result i32)): 1 when the n floats at byte $p hold one.
const FINITE_WASM = (() => {
  const leb = (n) => {
    const out = [];
    do {
      let b = n & 0x7f;
      n >>>= 7;
      if (n) b |= 0x80;
      out.push(b);
    } while (n);
    return out;
  };
  const K = [0x41, 0x80, 0x80, 0x80, 0xfc, 0x07]; // i32.const 0x7f800000 (exponent mask)
  const body = [
    0x02, 0x01, 0x7f, 0x02, 0x7b, // locals: $end i32, $acc v128, $mask v128
    ...K, 0xfd, 0x11, 0x21, 0x04, // $mask = i32x4.splat(K)
    // $end = $p + ($n & -4) * 4
    0x20, 0x00, 0x20, 0x01, 0x41, 0x7c, 0x71, 0x41, 0x02, 0x74, 0x6a, 0x21, 0x02,
    0x02, 0x40, 0x03, 0x40, // block, loop
    0x20, 0x00, 0x20, 0x02, 0x4f, 0x0d, 0x01, // br_if $p >= $end
    0x20, 0x03, 0x20, 0x00, 0xfd, 0x00, 0x02, 0x00, // $acc, v128.load $p
    0x20, 0x04, 0xfd, 0x4e, 0x20, 0x04, 0xfd, 0x37, // (x & $mask) == $mask
    0xfd, 0x50, 0x21, 0x03, // $acc |= that
    0x20, 0x00, 0x41, 0x10, 0x6a, 0x21, 0x00, // $p += 16
    0x0c, 0x00, 0x0b, 0x0b, // br loop, end, end
    // $end += ($n & 3) * 4
    0x20, 0x02, 0x20, 0x01, 0x41, 0x03, 0x71, 0x41, 0x02, 0x74, 0x6a, 0x21, 0x02,
    0x02, 0x40, 0x03, 0x40, // block, loop: the last 0-3 floats
    0x20, 0x00, 0x20, 0x02, 0x4f, 0x0d, 0x01,
    0x20, 0x00, 0x28, 0x02, 0x00, ...K, 0x71, ...K, 0x46, // (i32.load $p & K) == K
    0x04, 0x40, 0x41, 0x01, 0x0f, 0x0b, // if: return 1
    0x20, 0x00, 0x41, 0x04, 0x6a, 0x21, 0x00, // $p += 4
    0x0c, 0x00, 0x0b, 0x0b,
    0x20, 0x03, 0xfd, 0x53, 0x0b, // v128.any_true($acc)
  ];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    0x01, 0x07, 0x01, 0x60, 0x02, 0x7f, 0x7f, 0x01, 0x7f, // type: (i32, i32) -> i32
    // import "e" "m": a shared memory (min 1, max 65536 pages)
    0x02, 0x0b, 0x01, 0x01, 0x65, 0x01, 0x6d, 0x02, 0x03, 0x01, 0x80, 0x80, 0x04,
    0x03, 0x02, 0x01, 0x00, // function 0 of type 0
    0x07, 0x05, 0x01, 0x01, 0x66, 0x00, 0x00, // export it as "f"
    0x0a, ...leb(body.length + leb(body.length).length + 1), 0x01, ...leb(body.length), ...body,
  ]);
})();

let finiteModule; // undefined: not compiled yet; null: this runtime lacks wasm SIMD or threads

/** n float32s in a shared WebAssembly memory of their own, with the SIMD check bound to them;
 * or null (the caller uses plain memory and anyNonFiniteJs). */
function wasmFloats(n) {
  if (finiteModule === undefined) {
    try {
      finiteModule = new WebAssembly.Module(FINITE_WASM);
    } catch {
      finiteModule = null;
    }
  }
  if (!finiteModule || n * 4 > 2 ** 31) return null;
  try {
    const pages = Math.max(1, Math.ceil((n * 4) / 65536));
    const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
    const { f } = new WebAssembly.Instance(finiteModule, { e: { m: memory } }).exports;
    const arr = new Float32Array(memory.buffer, 0, n);
    const check = (a, o0, k) => (a === arr ? f(4 * o0, k) !== 0 : anyNonFiniteJs(a, o0, k));
    return { arr, check };
  } catch {
    return null;
  }
}

/** Copy one dense mask row (A entries of src from s0) to out[m0 ..]; return the column of the
 * first entry that is not 0/1/false/true, or -1. */
function copyMaskRow(src, s0, A, out, m0) {
  return src instanceof Uint8Array ? copyMaskBytes(src, s0, A, out, m0)
    : copyMaskValues(src, s0, A, out, m0);
}

function copyMaskBytes(src, s0, A, out, m0) {
  const row = src.subarray(s0, s0 + A);
  out.set(row, m0);
  let acc = 0;
  for (let j = 0; j < A; j++) acc |= row[j];
  if (acc <= 1) return -1;
  for (let j = 0; j < A; j++) if (row[j] > 1) return j;
  return -1;
}

function copyMaskValues(src, s0, A, out, m0) {
  for (let j = 0; j < A; j++) {
    const v = src[s0 + j];
    if (v === 0) out[m0 + j] = 0;
    else if (v === 1) out[m0 + j] = 1;
    else if (v === false) out[m0 + j] = 0;
    else if (v === true) out[m0 + j] = 1;
    else return j;
  }
  return -1;
}

/** `number` of a per-step float column, or throws: not a number / not finite after rounding. */
function stepFloat(col, t, name, e) {
  const v = col[t];
  if (typeof v !== 'number') {
    throw new EpisodeError(`${name} is ${describe(v)}, not a number`, { episode: e, step: t });
  }
  const f = Math.fround(v);
  if (f - f !== 0) {
    throw new EpisodeError(`${name} is ${fmtNonFinite(f)}`, { episode: e, step: t });
  }
  return f;
}

/** Fill rows r0 .. r0+T of the chunk `c` (and its final observation row f0) from a
 * normalized episode, checking every value in Python's order: the final observation, then per
 * step obs, reward, value, logprob, mask entries, legal ids, action range, legality. Throws
 * EpisodeError at the first bad value; the rows are scratch until the episode is accepted. */
function packEpisode(ep, e, lay, c, r0, f0, onesRow) {
  const { T, rewards, values, logprobs, actions, mask, legal, maskForm } = ep;
  const D = lay.obsDim;
  const A = lay.nActions;
  const M = lay.maskDim;
  const err = (reason, step) => new EpisodeError(reason, { episode: e, step });
  const out = c.masks;

  // The final observation is checked first (Python checks it with the shapes), at the last step.
  if (ep.finalObs !== null) {
    const f = ep.finalObs;
    const form = f instanceof Float32Array ? 'flat32' : isTyped(f) ? 'flat' : 'rows';
    const [, col, why] = packObs(form === 'rows' ? [f] : f, form, 1, D, c.final_obs, f0 * D,
      anyNonFiniteJs);
    if (why) throw err(`final_${why}`, null);
    if (col >= 0) {
      throw err(`final_obs[${col}] is ${fmtNonFinite(c.final_obs[f0 * D + col])} `
        + '(after conversion to float32)', T - 1);
    }
  }

  // Observations in bulk; a bad one is reported at its step, after earlier steps' errors.
  const [obsStep, obsCol, obsWhy] = packObs(ep.obs, ep.obsForm, T, D, c.obs, r0 * D, c.check);
  const stop = obsStep >= 0 ? obsStep : T;
  if (maskForm === 'legal' || (maskForm !== 'none' && M > A)) {
    out.fill(0, r0 * M, (r0 + stop) * M); // legal ids set ones into zeros; padding stays 0
  }

  for (let t = 0; t < stop; t++) {
    const r = r0 + t;
    c.rewards[r] = stepFloat(rewards, t, 'reward', e);
    if (values !== null) c.values[r] = stepFloat(values, t, 'value', e);
    if (logprobs !== null) c.logprobs[r] = stepFloat(logprobs, t, 'logprob', e);
    const m0 = r * M;
    if (maskForm === 'legal') {
      const ids = legal[t];
      for (let k = 0; k < ids.length; k++) {
        const id = ids[k];
        if (!(id >= 0 && id < A && (id | 0) === id)) {
          if (!Number.isInteger(id)) {
            throw err(`legal action ids must be integers, got ${describe(id)}`, t);
          }
          throw err(`legal action id ${id} is outside [0, ${A})`, t);
        }
        out[m0 + id] = 1;
      }
    } else if (maskForm === 'none') {
      out.set(onesRow, m0);
    } else {
      const bad = maskForm === 'flat' ? copyMaskRow(mask, t * A, A, out, m0)
        : copyMaskRow(mask[t], 0, A, out, m0);
      if (bad >= 0) {
        const v = maskForm === 'flat' ? mask[t * A + bad] : mask[t][bad];
        throw err(`mask[${bad}] is ${describe(v)}, not 0 or 1`, t);
      }
    }
    const a = actions[t];
    if (!(a >= 0 && a < A && (a | 0) === a)) {
      if (!Number.isInteger(a)) throw err(`action ${describe(a)} is not an integer`, t);
      throw err(`action ${a} is outside [0, ${A})`, t);
    }
    c.actions[r] = a;
    if (out[m0 + a] === 0) throw err(`action ${a} is not legal under the step's mask`, t);
    c.dones[r] = 0;
    c.truncated[r] = 0;
  }
  if (obsStep >= 0) {
    throw err(obsWhy ?? `obs[${obsCol}] is ${fmtNonFinite(c.obs[(r0 + obsStep) * D + obsCol])} `
      + '(after conversion to float32)', obsStep);
  }
  c.dones[r0 + T - 1] = 1;
  c.truncated[r0 + T - 1] = ep.truncated ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------
// Output: column files, column buffers, the background write thread

/** One column file being appended to, with a running CRC-32. */
class ColumnFile {
  constructor(dir, file, checksum) {
    this.file = file;
    this.fd = fs.openSync(path.join(dir, file), 'wx', 0o644);
    this.crc = checksum ? 0 : null;
  }
  checksum(bytes) {
    if (this.crc !== null && bytes.length) this.crc = crc32(bytes, this.crc);
  }
  close(fsync) {
    if (this.fd === null) return;
    const fd = this.fd;
    this.fd = null;
    try {
      fs.fchmodSync(fd, READ_ONLY);
      if (fsync) fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }
  discard() {
    if (this.fd === null) return;
    try { fs.closeSync(this.fd); } catch { /* already gone */ }
    this.fd = null;
  }
}

/** Column buffers of `rows` rows (and of `rows` final observations), in shared memory: the
 * write thread reads them in place. Each starts at offset 0, so every view is aligned. The obs
 * buffer is a WebAssembly memory when `simd` (and the runtime allows): `check` is then SIMD. */
function allocChunk(lay, rows, simd) {
  const arr = (Ctor, n) => new Ctor(new SharedArrayBuffer(n * Ctor.BYTES_PER_ELEMENT));
  const wasm = simd ? wasmFloats(rows * lay.obsDim) : null;
  return {
    rows,
    check: wasm ? wasm.check : anyNonFiniteJs,
    obs: wasm ? wasm.arr : arr(Float32Array, rows * lay.obsDim),
    actions: arr(Int32Array, rows),
    rewards: arr(Float32Array, rows),
    masks: arr(Uint8Array, rows * lay.maskDim),
    dones: arr(Uint8Array, rows),
    values: lay.hasValues ? arr(Float32Array, rows) : null,
    logprobs: lay.hasLogprobs ? arr(Float32Array, rows) : null,
    truncated: arr(Uint8Array, rows),
    final_obs: lay.hasFinalObs ? arr(Float32Array, rows * lay.obsDim) : null,
  };
}

// The buffers a flush appends, in this order ("slots" of a write job).
const SLOTS = [...PER_ROW, 'final_obs'];

// ---- CRC-32 of concatenations (zlib's crc32_combine), to split one CRC between two threads

function multModP(a, b) { // a(x) * b(x) modulo the CRC polynomial, bit-reflected
  let m = 0x80000000;
  let p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    b = b & 1 ? (b >>> 1) ^ 0xedb88320 : b >>> 1;
  }
  return p >>> 0;
}

const X2N = (() => { // x^(2^k) modulo the polynomial
  const t = new Array(32);
  let p = 0x40000000; // x^1
  t[0] = p;
  for (let k = 1; k < 32; k++) t[k] = p = multModP(p, p);
  return t;
})();

/** CRC-32 of A followed by B, from crc(A), crc(B) and B's length. */
export function crc32Combine(crcA, crcB, lenB) {
  let p = 0x80000000; // x^0
  let k = 3; // lenB bytes = 8*lenB bits: x^(8*lenB)
  for (let n = lenB; n > 0; n = Math.floor(n / 2), k++) {
    if (n % 2) p = multModP(X2N[k & 31], p);
  }
  return (multModP(p, crcA) ^ crcB) >>> 0;
}

// The write thread. It waits for jobs (ctl[SUBMITTED] > jobs seen), computes the CRC-32 of the
// part of the obs buffer it is given, appends every slot's bytes to its file, and counts the job
// in ctl[DONE]. An error is kept (ctl[ERR_LEN], err holds its JSON) and stops later writes.
// Jobs go through shared memory only (no messages): job = [set, crcFrom, crcTo, crcOut,
// (fd, bytes) per slot], fd -1 for an absent slot.
const SUBMITTED = 0;
const DONE = 1;
const ERR_LEN = 2;
const STOP = 3;
const JOB_SLOTS = 4;

const WRITER_THREAD = `
const { workerData } = require('node:worker_threads');
const fs = require('node:fs');
const zlib = require('node:zlib');
const { ctl, job, err, sets } = workerData;
let seen = 0;
for (;;) {
  if (Atomics.load(ctl, ${STOP})) break;
  if (Atomics.load(ctl, ${SUBMITTED}) === seen) {
    Atomics.wait(ctl, ${SUBMITTED}, seen);
    continue;
  }
  seen += 1;
  if (Atomics.load(ctl, ${ERR_LEN}) === 0) {
    try {
      const set = sets[job[0]];
      if (job[2] > job[1]) {
        let c = 0; // in pieces, like crc32native
        for (let o = job[1]; o < job[2]; o += ${CRC_PIECE}) {
          c = zlib.crc32(set[0].subarray(o, Math.min(o + ${CRC_PIECE}, job[2])), c);
        }
        job[3] = c | 0;
      }
      for (let k = 0; k < set.length; k++) {
        const fd = job[${JOB_SLOTS} + 2 * k];
        const len = job[${JOB_SLOTS} + 2 * k + 1];
        if (fd < 0) continue;
        let off = 0;
        while (off < len) off += fs.writeSync(fd, set[k], off, len - off);
      }
    } catch (e) {
      const text = Buffer.from(JSON.stringify({ code: e.code ?? null,
        message: String(e.message) }));
      const n = Math.min(text.length, err.length);
      err.set(text.subarray(0, n));
      Atomics.store(ctl, ${ERR_LEN}, n);
    }
  }
  Atomics.store(ctl, ${DONE}, seen);
  Atomics.notify(ctl, ${DONE});
}
`;

// Share of the obs CRC-32 computed by the calling thread; the write thread computes the rest
// besides writing. 0.5 balances the two threads for the benchmark's batches: a CPU profile of
// 463 MB (Node 20, 2-CPU VM) gave ~145 ms of packing and checks on the calling thread against
// ~145 ms of writes on the write thread, plus ~85 ms of CRC (zlib.crc32 in 8 KiB pieces).
const CALLER_CRC_SHARE = 0.5;

/** Appends the two buffer sets' rows on a worker thread, one job in flight at a time; the
 * caller waits with Atomics.wait (the API stays synchronous). */
class WriteThread {
  constructor(sets) {
    this.ctl = new Int32Array(new SharedArrayBuffer(4 * 4));
    this.job = new Int32Array(new SharedArrayBuffer(4 * (JOB_SLOTS + 2 * SLOTS.length)));
    this.err = new Uint8Array(new SharedArrayBuffer(2048));
    this.submitted = 0;
    this.pending = null; // what join() finishes: the obs CRC parts of the job in flight
    const views = sets.map((c) => SLOTS.map((k) => (c[k]
      ? new Uint8Array(c[k].buffer, c[k].byteOffset, c[k].byteLength) : null)));
    this.worker = new Worker(WRITER_THREAD, { eval: true,
      workerData: { ctl: this.ctl, job: this.job, err: this.err, sets: views } });
    this.worker.unref();
  }

  /** Append the first `lengths[k]` bytes of each slot of set `s` to `files[k]`; `crcFrom` is
   * where the thread's share of the obs CRC starts (`finish(crc)` gets it at join). */
  submit(s, files, lengths, crcFrom, finish) {
    this.join();
    const job = this.job;
    job[0] = s;
    job[1] = crcFrom;
    job[2] = lengths[0];
    job[3] = 0;
    for (let k = 0; k < SLOTS.length; k++) {
      job[JOB_SLOTS + 2 * k] = files[k] ? files[k].fd : -1;
      job[JOB_SLOTS + 2 * k + 1] = files[k] ? lengths[k] : 0;
    }
    this.pending = finish;
    this.submitted += 1;
    Atomics.store(this.ctl, SUBMITTED, this.submitted);
    Atomics.notify(this.ctl, SUBMITTED);
  }

  /** Wait for the job in flight (at most timeoutMs); throw the error the thread met, if any. */
  join(timeoutMs = Infinity) {
    const deadline = Date.now() + timeoutMs;
    let done;
    while ((done = Atomics.load(this.ctl, DONE)) < this.submitted) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('fastrl: the write thread did not finish in time');
      Atomics.wait(this.ctl, DONE, done, Math.min(left, 1e9));
    }
    const n = Atomics.load(this.ctl, ERR_LEN);
    if (n) {
      const { code, message } = JSON.parse(Buffer.from(this.err.slice(0, n)).toString());
      const exc = new Error(message);
      if (code) exc.code = code;
      throw exc;
    }
    if (this.pending) {
      const finish = this.pending;
      this.pending = null;
      finish(this.job[3] >>> 0);
    }
  }

  stop() {
    Atomics.store(this.ctl, STOP, 1);
    Atomics.add(this.ctl, SUBMITTED, 1); // wakes a waiting thread, which then sees STOP
    Atomics.notify(this.ctl, SUBMITTED);
    this.worker.terminate();
  }
}

// Writers not closed when the process exits normally leave no temporary folder behind.
const OPEN_WRITERS = new Set();
let exitHook = false;
function track(writer) {
  OPEN_WRITERS.add(writer);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const w of [...OPEN_WRITERS]) {
        try { w.abort(); } catch { /* best effort at exit */ }
      }
    });
  }
}

/** Rename `src` to a fresh `root/batch_<ms>` (see the header comment); fsync the root. */
function commitRename(src, root, fsync) {
  const lockPath = path.join(root, LOCK_FILE);
  const { O_RDWR, O_CREAT, O_NOFOLLOW = 0, O_NONBLOCK = 0 } = fs.constants;
  const fd = fs.openSync(lockPath, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK, 0o644);
  let final;
  try {
    if (!fs.fstatSync(fd).isFile()) {
      throw Object.assign(new Error(`${lockPath} is not a regular file; refused (remove it)`),
        { code: 'EINVAL' });
    }
    const buf = Buffer.alloc(64);
    const n = fs.readSync(fd, buf, 0, 64, 0);
    const raw = buf.toString('latin1', 0, n).trim();
    const last = /^[0-9]{1,19}$/.test(raw) ? Number(raw) : 0;
    let ms = Math.max(Date.now(), last + 1);
    for (;;) {
      final = path.join(root, `${BATCH_PREFIX}${ms}`);
      // like fs.existsSync, but a dangling symbolic link counts as taken too
      if (!fs.lstatSync(final, { throwIfNoEntry: false })) {
        try {
          fs.renameSync(src, final);
          break;
        } catch (exc) { // lost a race with another writer
          if (exc.code !== 'EEXIST' && exc.code !== 'ENOTEMPTY') throw exc;
        }
      }
      ms += 1;
    }
    fs.writeSync(fd, Buffer.from(`${ms}\n`.padEnd(24)), 0, 24, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (fsync) fsyncPath(root);
  return final;
}

// ---------------------------------------------------------------------------------------------
// The writer

/**
 * Write episodes into one batch folder `<root>/batch_<ms>/` (fastrl format v1).
 *
 * options:
 *   nActions    the game's action count. Inferred from the first episode's mask rows when
 *               omitted; required when masks come as legal-id lists, as one flat typed array,
 *               or not at all.
 *   obsDim      floats per observation. Inferred from the first episode's obs rows when
 *               omitted; required when obs comes as one flat typed array.
 *   maskPad     store masks maskPad columns wide (>= nActions; the extra columns are 0), e.g.
 *               256 for a 208-action game. Default: no padding.
 *   flushBytes  size of one set of column buffers (default 8 MiB; there are two). An episode
 *               longer than that gets a buffer of its own while it is written.
 *   writeThread append to the files on a worker thread (default true; used from the second
 *               buffer of a batch on, so small batches never start one).
 *   fsync       flush files and folders to disk before the rename (default true).
 *   checksum    CRC-32 of every file in meta.json `checksums` (default true).
 *   meta        JSON-serializable user metadata, stored under "user" in meta.json.
 *
 * Whether the batch has values / logprobs / final_obs columns follows the first accepted
 * episode; later episodes must agree. A rejected episode (EpisodeError) leaves the writer as it
 * was, and so does a rejected first episode (nothing is inferred from it).
 */
export class BatchWriter {
  constructor(root = 'data/binary', options = {}) {
    if (!HOST_LITTLE_ENDIAN) {
      throw new Error('fastrl batch_writer.mjs: big-endian hosts are not supported '
        + '(the format is little-endian and this writer copies typed arrays as they are)');
    }
    if (options === null || typeof options !== 'object') {
      throw new TypeError('BatchWriter options must be an object');
    }
    for (const k of Object.keys(options)) {
      if (!OPTIONS.includes(k)) {
        throw new TypeError(`BatchWriter: unknown option ${JSON.stringify(k)} (options: `
          + `${OPTIONS.join(', ')})`);
      }
    }
    const { nActions, obsDim, maskPad, flushBytes = DEFAULT_FLUSH_BYTES, fsync = true,
      checksum = true, meta, writeThread = true } = options;
    this.nActions = checkDim('nActions', nActions);
    this.obsDim = checkDim('obsDim', obsDim);
    this.maskPad = checkDim('maskPad', maskPad);
    if (this.maskPad !== null && this.nActions !== null && this.maskPad < this.nActions) {
      throw new RangeError(`maskPad=${this.maskPad} is smaller than nActions=${this.nActions}`);
    }
    if (!Number.isSafeInteger(flushBytes) || flushBytes < 1) {
      throw new RangeError(`flushBytes must be a positive integer, got ${describe(flushBytes)}`);
    }
    this._userMeta = undefined;
    if (meta !== undefined) {
      let text;
      try {
        text = JSON.stringify(meta);
      } catch (exc) {
        throw new TypeError(`meta must be JSON-serializable: ${exc.message}`);
      }
      if (text === undefined) throw new TypeError('meta must be JSON-serializable');
      this._userMeta = JSON.parse(text); // a copy, taken now
    }
    this.flushBytes = flushBytes;
    this._fsync = Boolean(fsync);
    this._checksum = Boolean(checksum);
    this._useThread = Boolean(writeThread);
    this.root = path.resolve(String(root));
    this.maskDim = null;
    this.path = null;
    this._layout = null;
    this._sets = null;      // the two column buffer sets
    this._chunk = null;     // the set being filled (or a larger one for one long episode)
    this._used = 0;         // rows filled in _chunk
    this._finUsed = 0;      // final observation rows filled in _chunk (one per episode)
    this._cap = 0;          // rows of a set
    this._onesRow = null;   // the mask row of an episode without masks
    this._files = null;     // column name -> ColumnFile, opened with the first accepted episode
    this._thread = null;    // WriteThread, started at the first flush before close
    this._lengths = new F64List();
    this._returns = new F64List();
    this._count = 0;
    this._closed = false;

    fs.mkdirSync(this.root, { recursive: true });
    const name = `${TMP_PREFIX}batch-${Date.now()}-${process.pid}-`
      + crypto.randomBytes(4).toString('hex');
    this._tmp = path.join(this.root, name);
    try {
      fs.mkdirSync(this._tmp);
    } catch (exc) {
      throw new Error(`fastrl: cannot create a temporary folder in ${this.root} (${exc.message})`,
        { cause: exc });
    }
    track(this);
  }

  /** Episodes accepted so far (after close: in the committed batch). */
  get episodes() { return this._lengths.n; }

  /** Transitions accepted so far. */
  get transitions() { return this._count; }

  /** The hidden folder the batch is written in until close(). */
  get tempPath() { return this._tmp; }

  /**
   * Add one whole episode of T steps:
   *   obs        T rows of obsDim numbers (arrays or typed arrays), or one flat typed array of
   *              T*obsDim values. Float32Array values are copied as they are, other numbers are
   *              rounded to float32 (to nearest, ties to even, as NumPy does);
   *   actions    T integers in [0, nActions);  rewards: T numbers;
   *   mask       T rows of nActions 0/1 or booleans (or one flat Uint8Array of T*nActions), or
   *   legal      T arrays of legal action ids, or neither (every action legal: all-ones masks);
   *   values, logprobs  optional, T numbers each;
   *   truncated  true when a time limit, not the game, ended the episode (default false);
   *   finalObs   optional, obsDim numbers: the observation after the last step.
   * Throws EpisodeError, and adds nothing, when the episode is malformed. The inputs are not
   * modified, and may be reused as soon as addEpisode returns.
   */
  addEpisode(episode) {
    this._checkOpen();
    const e = this.episodes;
    const tentative = this._layout === null;
    const lay = this._layout ?? this._inferLayout(episode, e);
    const ep = normalizeEpisode(episode, e, lay);
    if (tentative) this._setLayout(lay);
    try {
      if (this._used + ep.T > this._chunk.rows) {
        this._flush(false);
        if (ep.T > this._chunk.rows) this._chunk = allocChunk(lay, ep.T); // one long episode
      }
      packEpisode(ep, e, lay, this._chunk, this._used, this._finUsed, this._onesRow);
    } catch (exc) {
      if (tentative) this._unsetLayout();
      throw exc;
    }
    if (tentative) this._openFiles();
    const r0 = this._used;
    this._used += ep.T;
    this._count += ep.T;
    this._lengths.push(ep.T);
    this._returns.push(episodeReturn(this._chunk.rewards, r0, ep.T));
    if (lay.hasFinalObs) this._finUsed += 1;
  }

  /** Write what is buffered, the episode index and meta.json (last), and commit atomically;
   * return the batch path (null when no episode was added: nothing is written then).
   * Idempotent. Synchronous. */
  close() {
    if (this._closed) return this.path;
    if (!this.episodes) {
      this.abort();
      return null;
    }
    try {
      this._flush(true);
      if (this._thread) this._thread.join();
      this._writeIndex();
      for (const file of Object.values(this._files)) file.close(this._fsync);
      const metaPath = path.join(this._tmp, META_FILE);
      const fd = fs.openSync(metaPath, 'wx', 0o644);
      try {
        writeAll(fd, Buffer.from(pyJson(this._meta()) + '\n', 'utf8'));
        fs.fchmodSync(fd, READ_ONLY);
        if (this._fsync) fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      if (this._fsync) fsyncPath(this._tmp);
      this.path = commitRename(this._tmp, this.root, this._fsync);
    } catch (exc) {
      this._discardAndThrow(exc, 'committing');
    }
    this._closed = true;
    this._release();
    return this.path;
  }

  /** Discard everything written; no batch folder is created. Idempotent. */
  abort() {
    if (this._closed) return;
    this._closed = true;
    if (this._thread) {
      try { this._thread.join(10000); } catch { /* the batch goes anyway */ }
    }
    if (this._files) for (const f of Object.values(this._files)) f.discard();
    this._release();
    fs.rmSync(this._tmp, { recursive: true, force: true });
  }

  // -- internals -----------------------------------------------------------------------------

  _checkOpen() {
    if (this._closed) throw new Error('BatchWriter is closed');
  }

  _release() {
    OPEN_WRITERS.delete(this);
    if (this._thread) this._thread.stop();
    this._thread = null;
    this._sets = this._chunk = null;
  }

  _discardAndThrow(exc, doing) {
    const where = this._tmp;
    try { this.abort(); } catch { /* report the first error */ }
    if (exc && typeof exc.code === 'string') {
      const err = new Error(`fastrl: ${doing} the batch in ${where} failed (${exc.message}); `
        + 'the batch was discarded', { cause: exc });
      err.code = exc.code;
      throw err;
    }
    throw exc;
  }

  /** The layout the first episode gives (kept only if that episode is accepted). */
  _inferLayout(ep, e) {
    if (ep === null || typeof ep !== 'object') {
      throw new EpisodeError('an episode must be an object { obs, actions, rewards, ... }',
        { episode: e });
    }
    let nActions = this.nActions;
    if (nActions === null) {
      if (ep.mask === undefined || ep.mask === null) {
        throw new EpisodeError('nActions is required when masks are given as legal ids or '
          + 'not given (new BatchWriter(root, { nActions }))', { episode: e });
      }
      if (isTyped(ep.mask)) {
        throw new EpisodeError('nActions is required when mask is one flat typed array '
          + '(new BatchWriter(root, { nActions }))', { episode: e });
      }
      const row = Array.isArray(ep.mask) ? ep.mask[0] : undefined;
      if (!isNumberList(row) || row.length < 1 || row.length > MAX_DIM) {
        throw new EpisodeError('mask must be T rows of nActions 0/1 or booleans',
          { episode: e });
      }
      nActions = row.length;
    }
    if (this.maskPad !== null && this.maskPad < nActions) {
      throw new RangeError(`maskPad=${this.maskPad} is smaller than nActions=${nActions}`);
    }
    let obsDim = this.obsDim;
    if (obsDim === null) {
      if (isTyped(ep.obs)) {
        throw new EpisodeError('obsDim is required when obs is one flat typed array '
          + '(new BatchWriter(root, { obsDim }))', { episode: e });
      }
      const row = Array.isArray(ep.obs) ? ep.obs[0] : undefined;
      if (!isNumberList(row) || row.length < 1 || row.length > MAX_DIM) {
        throw new EpisodeError('obs must be T rows of obsDim numbers', { episode: e });
      }
      obsDim = row.length;
    }
    const given = (k) => ep[k] !== undefined && ep[k] !== null;
    return { obsDim, nActions, maskDim: this.maskPad ?? nActions, hasValues: given('values'),
      hasLogprobs: given('logprobs'), hasFinalObs: given('finalObs') };
  }

  _setLayout(lay) {
    this._layout = lay;
    this.maskDim = lay.maskDim;
    // bytes per row of a set (a final observation row per row too: at most one per episode)
    const rowBytes = lay.obsDim * 4 + 4 + 4 + lay.maskDim + 1 + 1
      + 4 * ((lay.hasValues ? 1 : 0) + (lay.hasLogprobs ? 1 : 0))
      + (lay.hasFinalObs ? 4 * lay.obsDim : 0);
    this._cap = Math.max(1, Math.floor(this.flushBytes / rowBytes));
    this._sets = [allocChunk(lay, this._cap, true), null]; // the second one when first needed
    this._chunk = this._sets[0];
    this._used = 0;
    this._onesRow = new Uint8Array(lay.maskDim).fill(1, 0, lay.nActions);
  }

  _unsetLayout() {
    this._layout = null;
    this.maskDim = null;
    this._sets = this._chunk = this._onesRow = null;
    this._cap = 0;
  }

  _openFiles() {
    const lay = this._layout;
    const names = ['obs', 'actions', 'rewards', 'masks', 'dones'];
    if (lay.hasValues) names.push('values');
    if (lay.hasLogprobs) names.push('logprobs');
    names.push('truncated');
    if (lay.hasFinalObs) names.push('final_obs');
    this._files = {};
    try {
      for (const n of names) {
        this._files[n] = new ColumnFile(this._tmp, COLUMNS[n][0], this._checksum);
      }
    } catch (exc) {
      this._discardAndThrow(exc, 'writing');
    }
    this.nActions = lay.nActions;
    this.obsDim = lay.obsDim;
  }

  /** Append the filled rows to the files and continue in the other buffer set. The CRC-32s
   * are computed here, but for a share of the obs one; the appends run on the write thread,
   * except for the `last` flush, a long episode's own buffer, or with writeThread off. */
  _flush(last) {
    const c = this._chunk;
    const n = this._used;
    const lay = this._layout;
    if (!n) return;
    try {
      const files = SLOTS.map((k) => (c[k] ? this._files[k] : null));
      const lengths = SLOTS.map((k) => {
        if (!c[k]) return 0;
        const rows = k === 'final_obs' ? this._finUsed : n;
        let width = 1;
        if (k === 'obs' || k === 'final_obs') width = lay.obsDim;
        else if (k === 'masks') width = lay.maskDim;
        return rows * width * c[k].BYTES_PER_ELEMENT;
      });
      const bytes = (k) => new Uint8Array(c[SLOTS[k]].buffer, c[SLOTS[k]].byteOffset, lengths[k]);
      const s = this._sets.indexOf(c); // -1: a long episode's own buffer
      if (!last && s >= 0 && this._useThread) {
        if (!this._thread) {
          this._sets[1] = allocChunk(lay, this._cap, true);
          this._thread = new WriteThread(this._sets);
        }
        for (let k = 1; k < SLOTS.length; k++) if (files[k]) files[k].checksum(bytes(k));
        const obs = files[0];
        const len = lengths[0];
        const shared = obs.crc !== null && crc32 !== crc32js; // the thread has zlib.crc32 too
        const split = shared ? Math.floor(len * CALLER_CRC_SHARE) : len;
        const mine = obs.crc !== null ? crc32(bytes(0).subarray(0, split), 0) : 0;
        const finish = obs.crc === null ? null : (theirs) => {
          obs.crc = crc32Combine(crc32Combine(obs.crc, mine, split), theirs, len - split);
        };
        this._thread.submit(s, files, lengths, split, finish); // waits for the other set's job
        this._chunk = this._sets[1 - s];
      } else {
        if (this._thread) this._thread.join();
        for (let k = 0; k < SLOTS.length; k++) {
          if (!files[k]) continue;
          files[k].checksum(bytes(k));
          writeAll(files[k].fd, bytes(k));
        }
        if (s < 0) this._chunk = this._sets[0];
      }
    } catch (exc) {
      this._discardAndThrow(exc, 'writing'); // a partial write cannot be undone
    }
    this._used = 0;
    this._finUsed = 0;
  }

  _writeIndex() {
    const E = this.episodes;
    const index = new Uint32Array(2 * (E + 1)); // int64 little-endian as (low, high) words
    let start = 0;
    for (let i = 0; i <= E; i++) {
      index[2 * i] = start % 4294967296;
      index[2 * i + 1] = Math.floor(start / 4294967296);
      if (i < E) start += this._lengths.a[i];
    }
    const f = new ColumnFile(this._tmp, COLUMNS.episode_index[0], this._checksum);
    this._files.episode_index = f;
    const bytes = new Uint8Array(index.buffer);
    f.checksum(bytes);
    writeAll(f.fd, bytes);
  }

  /** meta.json: Python's keys, in Python's order, with Python's statistics. */
  _meta() {
    const lay = this._layout;
    const E = this.episodes;
    const N = this._count;
    const columns = {};
    const checksums = {};
    for (const name of Object.keys(COLUMNS)) {
      const f = this._files[name];
      if (!f) continue;
      const [file, dtype, width] = COLUMNS[name];
      let shape;
      if (name === 'episode_index') shape = [E + 1];
      else if (name === 'final_obs') shape = [E, lay.obsDim];
      else shape = width ? [N, lay[width]] : [N];
      columns[name] = { file, dtype, shape };
      if (f.crc !== null) checksums[file] = `crc32:${f.crc.toString(16).padStart(8, '0')}`;
    }
    const lengths = this._lengths.a.subarray(0, E);
    const returns = this._returns.a.subarray(0, E);
    let lmin = Infinity;
    let lmax = -Infinity;
    let rmin = Infinity;
    let rmax = -Infinity;
    for (let i = 0; i < E; i++) {
      lmin = Math.min(lmin, lengths[i]);
      lmax = Math.max(lmax, lengths[i]);
      rmin = Math.min(rmin, returns[i]);
      rmax = Math.max(rmax, returns[i]);
    }
    const meta = {
      count: N, obsDim: lay.obsDim, maskDim: lay.maskDim, episodes: E, steps: N,
      createdAt: new Date().toISOString(), format: 'fastrl-batch', formatVersion: FORMAT_VERSION,
      byteOrder: 'little', numActions: lay.nActions, columns,
      episodeLength: { min: new PyFloat(lmin), mean: new PyFloat(N / E), max: new PyFloat(lmax) },
      episodeReturn: { min: new PyFloat(rmin),
        mean: new PyFloat((0.0 + pairwiseSum(returns, 0, E)) / E), max: new PyFloat(rmax) },
      producer: { fastrl: FASTRL_VERSION, backend: 'node' },
    };
    if (Object.keys(checksums).length) meta.checksums = checksums;
    if (this._userMeta !== undefined) meta.user = this._userMeta;
    return meta;
  }
}
