// Behaviour of the Node writer beyond the shared vectors: commit and abort, naming, options,
// episodes without masks, final observations, and the messages only this writer gives.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { BatchWriter, EpisodeError, crc32Combine, crc32js } from '../batch_writer.mjs';

const MODULE = fileURLToPath(new URL('../batch_writer.mjs', import.meta.url));

// One scratch folder per test file, removed at exit (t.after needs Node >= 18.13).
const SCRATCH = fs.mkdtempSync(path.join(os.tmpdir(), 'fastrl-js-'));
process.on('exit', () => fs.rmSync(SCRATCH, { recursive: true, force: true }));
const tmpRoot = () => fs.mkdtempSync(path.join(SCRATCH, 'r'));

/** A valid episode of T steps: obsDim D, actions in [0, A), legal ids = {a, (a+1) % A}. */
function ep(T, { D = 3, A = 5, seed = 1, ...extra } = {}) {
  const obs = [];
  const actions = [];
  const rewards = [];
  const legal = [];
  for (let t = 0; t < T; t++) {
    obs.push(Array.from({ length: D }, (_, j) => (seed * 31 + t * 7 + j) / 8));
    actions.push((seed + t) % A);
    rewards.push((t - seed) / 4);
    legal.push([(seed + t) % A, (seed + t + 1) % A]);
  }
  return { obs, actions, rewards, legal, ...extra };
}

const ls = (d) => fs.readdirSync(d).sort();
const readMeta = (b) => JSON.parse(fs.readFileSync(path.join(b, 'meta.json'), 'utf8'));
const bytes = (b, f) => Uint8Array.from(fs.readFileSync(path.join(b, f))); // own, aligned buffer

function throwsEpisode(fn, pattern) {
  assert.throws(fn, (exc) => {
    assert.ok(exc instanceof EpisodeError, `expected an EpisodeError, got ${exc}`);
    assert.match(exc.message, pattern);
    return true;
  });
}

test('commit: hidden temporary folder, then batch_<ms> with meta.json; nothing else left', () => {
  const root = tmpRoot();
  const w = new BatchWriter(root, { nActions: 5, flushBytes: 64 });
  assert.match(path.basename(w.tempPath), new RegExp(`^\\.fastrl-tmp-batch-\\d{13}-${process.pid}-[0-9a-f]{8}$`));
  for (let i = 0; i < 6; i++) w.addEpisode(ep(4, { seed: i }));
  // columns are appended as the writer goes (bounded memory), meta.json and the index come last
  const inTmp = ls(w.tempPath);
  assert.ok(inTmp.includes('obs.float32.bin'));
  assert.ok(fs.statSync(path.join(w.tempPath, 'obs.float32.bin')).size > 0);
  assert.ok(!inTmp.includes('meta.json') && !inTmp.includes('episode_index.int64.bin'));
  const batch = w.close();
  assert.equal(w.close(), batch); // idempotent
  assert.match(path.basename(batch), /^batch_\d{13}$/);
  assert.deepEqual(ls(root), ['.fastrl.lock', path.basename(batch)]);
  assert.deepEqual(ls(batch), ['actions.int32.bin', 'dones.uint8.bin', 'episode_index.int64.bin',
    'masks.uint8.bin', 'meta.json', 'obs.float32.bin', 'rewards.float32.bin',
    'truncated.uint8.bin']);
  for (const f of ls(batch)) assert.equal(fs.statSync(path.join(batch, f)).mode & 0o777, 0o444, f);
  const meta = readMeta(batch);
  assert.equal(meta.count, 24);
  assert.equal(meta.episodes, 6);
  assert.equal(fs.statSync(path.join(batch, 'obs.float32.bin')).size, 24 * 3 * 4);
  const lock = fs.readFileSync(path.join(root, '.fastrl.lock'), 'latin1');
  assert.equal(lock, `${path.basename(batch).slice(6)}\n`.padEnd(24));
  assert.throws(() => w.addEpisode(ep(1)), /closed/);
});

test('abort (and close with no episode) leaves nothing', () => {
  const root = tmpRoot();
  const w = new BatchWriter(root, { nActions: 5, flushBytes: 100 });
  for (let i = 0; i < 5; i++) w.addEpisode(ep(10, { seed: i }));
  w.abort();
  w.abort();
  assert.deepEqual(ls(root), []);
  assert.equal(w.close(), null);
  const empty = new BatchWriter(root, { nActions: 5 });
  assert.equal(empty.close(), null);
  assert.deepEqual(ls(root), []);
  // a writer whose only episode was rejected writes nothing either
  const bad = new BatchWriter(root, { nActions: 5 });
  throwsEpisode(() => bad.addEpisode(ep(3, { actions: [1, 9, 3] })), /outside/);
  assert.equal(bad.close(), null);
  assert.deepEqual(ls(root), []);
});

test('an unclosed writer leaves no temporary folder when the process exits', () => {
  const root = tmpRoot();
  const code = `import { BatchWriter } from ${JSON.stringify(MODULE)};
    const w = new BatchWriter(${JSON.stringify(root)}, { nActions: 2 });
    w.addEpisode({ obs: [[1]], actions: [0], rewards: [0], legal: [[0]] });`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(ls(root), []);
});

test('names are unique and increasing; the lock file number and taken names are respected', () => {
  const root = tmpRoot();
  const names = [];
  for (let i = 0; i < 5; i++) {
    const w = new BatchWriter(root, { nActions: 5, fsync: false });
    w.addEpisode(ep(2, { seed: i }));
    names.push(path.basename(w.close()));
  }
  assert.equal(new Set(names).size, 5);
  assert.deepEqual([...names].sort(), names);
  // a later number in .fastrl.lock (another writer, a clock step back) is honoured ...
  const future = Date.now() + 10_000_000;
  fs.writeFileSync(path.join(root, '.fastrl.lock'), `${future}\n`.padEnd(24));
  // ... and names already taken (a non-empty or an empty folder) are skipped
  fs.mkdirSync(path.join(root, `batch_${future + 1}`));
  fs.writeFileSync(path.join(root, `batch_${future + 1}`, 'x'), '');
  fs.mkdirSync(path.join(root, `batch_${future + 2}`));
  const w = new BatchWriter(root, { nActions: 5 });
  w.addEpisode(ep(2));
  assert.equal(path.basename(w.close()), `batch_${future + 3}`);
  assert.equal(fs.readFileSync(path.join(root, '.fastrl.lock'), 'latin1').trim(), String(future + 3));
  assert.deepEqual(ls(path.join(root, `batch_${future + 2}`)), []);
});

test('options are checked', () => {
  const root = tmpRoot();
  const bad = [
    [{ nActions: 0 }, /nActions must be an integer in \[1, 16777216\], got 0/],
    [{ nActions: 2.5 }, /nActions/],
    [{ obsDim: -1 }, /obsDim/],
    [{ maskPad: '8' }, /maskPad/],
    [{ nActions: 10, maskPad: 8 }, /maskPad=8 is smaller than nActions=10/],
    [{ flushBytes: 0 }, /flushBytes/],
    [{ meta: { n: 1n } }, /meta must be JSON-serializable/],
    [{ nactions: 4 }, /unknown option "nactions"/],
  ];
  for (const [opts, re] of bad) assert.throws(() => new BatchWriter(root, opts), re);
  assert.deepEqual(ls(root), []);
  // maskPad checked against an inferred nActions too
  const w = new BatchWriter(root, { maskPad: 2 });
  assert.throws(() => w.addEpisode({ ...ep(1), legal: undefined, mask: [[1, 0, 0]] }),
    /maskPad=2 is smaller than nActions=3/);
  w.abort();
});

test('messages name the episode and the step', () => {
  const root = tmpRoot();
  const w = new BatchWriter(root, { nActions: 5, fsync: false });
  w.addEpisode(ep(3));
  const cases = [
    [{ obs: [[1, 2, 3], [1, 2], [1, 2, 3]] }, /^episode 1, step 1: obs rows have 2 values, expected obsDim=3$/],
    [{ obs: [[1, 2, 3], [1, 2, null], [1, 2, 3]] }, /^episode 1, step 1: obs\[2\] is null, not a number$/],
    [{ obs: [[1, 2, 3], [1, 2, 3], 'abc'] }, /^episode 1, step 2: obs row is "abc", not an array of numbers$/],
    [{ obs: new Float32Array(8) }, /^episode 1: obs has 8 values, expected steps\*obsDim = 3\*3 = 9$/],
    [{ obs: { 0: [1, 2, 3] } }, /^episode 1: obs must be T rows/],
    [{ legal: undefined, mask: [[1, 1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1, 1]] }, /^episode 1, step 1: mask rows have 4 entries, expected numActions=5$/],
    [{ legal: undefined, mask: [[1, 1, 1, 1, 1], [1, 1, 0.5, 1, 1], [1, 1, 1, 1, 1]] }, /^episode 1, step 1: mask\[2\] is 0\.5, not 0 or 1$/],
    [{ legal: undefined, mask: [[1, 1, 1, 1, 1], [1, 1, 1, 1, '1'], [1, 1, 1, 1, 1]] }, /^episode 1, step 1: mask\[4\] is "1", not 0 or 1$/],
    [{ legal: undefined, mask: new Uint8Array(15).fill(2) }, /^episode 1, step 0: mask\[0\] is 2, not 0 or 1$/],
    [{ legal: [[1, 2], [2, 3.5], [3]] }, /^episode 1, step 1: legal action ids must be integers, got 3\.5$/],
    [{ legal: [[1, 2], 7, [3]] }, /^episode 1, step 1: legal must be a list of action ids$/],
    [{ actions: [2, 2.5, 4] }, /^episode 1, step 1: action 2\.5 is not an integer$/],
    [{ actions: [2, '2', 4] }, /^episode 1, step 1: action "2" is not an integer$/],
    [{ rewards: [0, 'x', 0] }, /^episode 1, step 1: reward is "x", not a number$/],
    [{ rewards: [0, 0, 1e39] }, /^episode 1, step 2: reward is \+inf$/],
    [{ mask: [[1, 1, 1, 1, 1]] }, /^episode 1: give one of mask .* or legal .*, not both$/],
    [{ truncated: 'yes' }, /^episode 1: truncated must be true or false, got "yes"$/],
    [{ final_obs: [1, 2, 3] }, /^episode 1: unknown episode field "final_obs"/],
    [{ finalObs: [1, 2, 3] }, /^episode 1: final_obs given, but earlier episodes of this batch have none$/],
    [{ actions: new BigInt64Array(3) }, /^episode 1: actions must be an array/],
  ];
  for (const [patch, re] of cases) throwsEpisode(() => w.addEpisode({ ...ep(3, { seed: 2 }), ...patch }), re);
  throwsEpisode(() => w.addEpisode(null), /^episode 1: an episode must be an object/);
  assert.equal(w.episodes, 1);
  w.addEpisode(ep(2, { seed: 3 }));
  const meta = readMeta(w.close());
  assert.equal(meta.episodes, 2);
  assert.equal(meta.count, 5);
});

test('nActions / obsDim required when they cannot be inferred', () => {
  const root = tmpRoot();
  const w = new BatchWriter(root);
  throwsEpisode(() => w.addEpisode(ep(2)), /^episode 0: nActions is required when masks are given as legal ids or not given/);
  throwsEpisode(() => w.addEpisode({ ...ep(2), legal: undefined }), /nActions is required/);
  throwsEpisode(() => w.addEpisode({ ...ep(2), legal: undefined, mask: new Uint8Array(10).fill(1) }), /nActions is required when mask is one flat typed array/);
  const w2 = new BatchWriter(root, { nActions: 5 });
  throwsEpisode(() => w2.addEpisode({ ...ep(2), obs: new Float32Array(6) }), /^episode 0: obsDim is required when obs is one flat typed array/);
  // inferred from the first episode's rows
  w.addEpisode({ ...ep(2, { D: 4 }), legal: undefined, mask: [[1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0]] });
  assert.equal(w.nActions, 6);
  assert.equal(w.obsDim, 4);
  throwsEpisode(() => w.addEpisode(ep(2)), /^episode 1, step 0: obs rows have 3 values, expected obsDim=4$/);
  w.abort();
  w2.abort();
});

test('a rejected first episode decides nothing (optional columns, inferred widths)', () => {
  const root = tmpRoot();
  const w = new BatchWriter(root, { nActions: 5 });
  throwsEpisode(() => w.addEpisode(ep(3, { values: [0, 0, NaN] })), /^episode 0, step 2: value is NaN$/);
  throwsEpisode(() => w.addEpisode(ep(3, { D: 7, actions: [1, 2, 9] })), /outside \[0, 5\)/);
  w.addEpisode(ep(3)); // no values, obsDim 3
  throwsEpisode(() => w.addEpisode(ep(3, { values: [0, 0, 0] })), /values given, but earlier episodes/);
  const meta = readMeta(w.close());
  assert.equal(meta.obsDim, 3);
  assert.ok(!('values' in meta.columns));
});

test('episodes without masks: all-ones masks of nActions columns, padding stays 0', () => {
  const root = tmpRoot();
  const w = new BatchWriter(root, { nActions: 3, maskPad: 5 });
  w.addEpisode({ obs: [[1], [2]], actions: [0, 2], rewards: [1, 2] });
  w.addEpisode({ obs: [[3]], actions: [1], rewards: [3], legal: [[1]] });
  throwsEpisode(() => w.addEpisode({ obs: [[1]], actions: [3], rewards: [0] }), /^episode 2, step 0: action 3 is outside \[0, 3\)$/);
  const batch = w.close();
  assert.deepEqual([...bytes(batch, 'masks.uint8.bin')], [1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0]);
  const meta = readMeta(batch);
  assert.equal(meta.maskDim, 5);
  assert.equal(meta.numActions, 3);
});

test('final observations: one float32 row per episode, listed after truncated', () => {
  const root = tmpRoot();
  const w = new BatchWriter(root, { nActions: 5, flushBytes: 40 });
  const fin = [];
  for (let i = 0; i < 9; i++) {
    fin.push([i + 0.1, -i, 1e-40]);
    w.addEpisode(ep(2, { seed: i, finalObs: i % 2 ? new Float64Array(fin[i]) : fin[i], truncated: i === 3 }));
  }
  throwsEpisode(() => w.addEpisode(ep(2)), /^episode 9: final_obs missing, but earlier episodes of this batch have final_obs$/);
  throwsEpisode(() => w.addEpisode(ep(2, { finalObs: [1, 2] })), /^episode 9: final_obs must have shape \(3,\), got \(2,\)$/);
  throwsEpisode(() => w.addEpisode(ep(2, { finalObs: [1, 1e39, 2] })), /^episode 9, step 1: final_obs\[1\] is \+inf \(after conversion to float32\)$/);
  throwsEpisode(() => w.addEpisode(ep(2, { finalObs: [1, 'a', 2] })), /^episode 9: final_obs\[1\] is "a", not a number$/);
  const batch = w.close();
  const got = new Float32Array(bytes(batch, 'final_obs.float32.bin').slice().buffer);
  assert.deepEqual([...got], [...Float32Array.from(fin.flat())]);
  const meta = readMeta(batch);
  assert.deepEqual(Object.keys(meta.columns), ['obs', 'actions', 'rewards', 'masks', 'dones',
    'truncated', 'final_obs', 'episode_index']);
  assert.deepEqual(meta.columns.final_obs, { file: 'final_obs.float32.bin', dtype: '<f4', shape: [9, 3] });
  assert.match(meta.checksums['final_obs.float32.bin'], /^crc32:[0-9a-f]{8}$/);
  assert.deepEqual(Object.keys(meta.checksums).at(-2), 'final_obs.float32.bin');
});

test('inputs are not modified; user meta is stored under "user"', () => {
  const root = tmpRoot();
  const w = new BatchWriter(root, { nActions: 5, obsDim: 3, meta: { run: 'abc', n: 1.5, ü: [1, 2] } });
  const obs = new Float32Array([1, 2, 3, 4, 5, 6]);
  const e = { obs, actions: Int32Array.from([1, 2]), rewards: [0.1, 0.2], legal: [[1], [2]] };
  w.addEpisode(e);
  assert.deepEqual([...obs], [1, 2, 3, 4, 5, 6]);
  const batch = w.close();
  const text = fs.readFileSync(path.join(batch, 'meta.json'), 'utf8');
  assert.deepEqual(JSON.parse(text).user, { run: 'abc', n: 1.5, ü: [1, 2] });
  assert.ok(text.includes('"\\u00fc"'), 'non-ASCII escaped like Python\'s json.dump');
});

test('an episode longer than the buffers, and many buffers, give the same files', () => {
  const root = tmpRoot();
  const eps = [ep(1), ep(50, { seed: 2 }), ep(3, { seed: 3 }), ep(200, { seed: 4 })];
  const out = [];
  for (const flushBytes of [undefined, 1, 97, 5000]) {
    const w = new BatchWriter(path.join(root, String(flushBytes)), { nActions: 5, flushBytes, fsync: false });
    for (const e of eps) w.addEpisode(e);
    const b = w.close();
    out.push(ls(b).filter((f) => f !== 'meta.json').map((f) => fs.readFileSync(path.join(b, f)).toString('hex')).join('|'));
  }
  assert.ok(out.every((x) => x === out[0]));
});

test('a failed append discards the batch and says so (with and without the write thread)', () => {
  for (const writeThread of [true, false]) {
    const root = tmpRoot();
    const w = new BatchWriter(root, { nActions: 5, flushBytes: 200, writeThread });
    for (let i = 0; i < 4; i++) w.addEpisode(ep(10, { seed: i }));
    fs.closeSync(w._files.obs.fd); // the disk "fails" under the writer (EBADF)
    assert.throws(() => {
      for (let i = 0; i < 20; i++) w.addEpisode(ep(10, { seed: i }));
      w.close();
    }, (exc) => {
      assert.match(exc.message, /^fastrl: writing the batch in .*\.fastrl-tmp-batch-.* failed \(.*\); the batch was discarded$/);
      assert.equal(exc.code, 'EBADF');
      return true;
    });
    assert.deepEqual(ls(root), []);
    assert.throws(() => w.addEpisode(ep(1)), /closed/);
    assert.equal(w.close(), null);
  }
});

test('CRC-32 of a concatenation from the parts (crc32Combine)', () => {
  const data = new Uint8Array(70000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24;
  const whole = crc32js(data);
  for (const cut of [0, 1, 7, 8, 1000, 65536, 69999, 70000]) {
    const a = crc32js(data.subarray(0, cut));
    const b = crc32js(data.subarray(cut));
    assert.equal(crc32Combine(a, b, data.length - cut), whole, `cut at ${cut}`);
  }
  // lengths past 2^32 bytes: runs of zero bytes built by doubling, then cut two ways
  const z = [crc32js(new Uint8Array(1))]; // z[k] = CRC of 2^k zero bytes
  for (let k = 1; k <= 33; k++) z[k] = crc32Combine(z[k - 1], z[k - 1], 2 ** (k - 1));
  assert.equal(z[10], crc32js(new Uint8Array(1024)));
  assert.equal(crc32Combine(z[32], z[31], 2 ** 31), crc32Combine(z[31], z[32], 2 ** 32));
  assert.equal(crc32Combine(z[32], z[32], 2 ** 32), z[33]);
});

test('a non-finite observation is found wherever it is (SIMD check and JS check)', () => {
  const root = tmpRoot();
  for (const flushBytes of [undefined, 1]) { // the set buffers (WebAssembly), a long episode's own
    const w = new BatchWriter(root, { nActions: 5, obsDim: 5, flushBytes, fsync: false });
    w.addEpisode(ep(2, { D: 5 }));
    for (let i = 0; i < 15; i++) {
      for (const bad of [NaN, Infinity, -1e39]) {
        const obs = new Float64Array(15).fill(0.5);
        obs[i] = bad;
        if (i + 1 < 15) obs[i + 1] = NaN; // a later one is not reported
        const what = Number.isNaN(bad) ? 'NaN' : bad > 0 ? '\\+inf' : '-inf';
        throwsEpisode(() => w.addEpisode(ep(3, { D: 5, obs })), new RegExp(
          `^episode 1, step ${Math.floor(i / 5)}: obs\\[${i % 5}\\] is ${what} \\(after conversion to float32\\)$`));
      }
    }
    w.addEpisode(ep(3, { D: 5, obs: new Float32Array(15).fill(3.4028234663852886e38) }));
    assert.equal(readMeta(w.close()).episodes, 2);
  }
});
