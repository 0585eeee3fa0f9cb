// The Node writer against the shared vectors made from Python's fastrl.BatchWriter
// (tests/vectors/writer_cases.json): same bytes in every column file, same meta.json text but for
// createdAt and producer, same error messages.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BatchWriter, EpisodeError, FASTRL_VERSION, crc32, crc32js, pyFloatRepr }
  from '../batch_writer.mjs';
import { loadVectors, decode, inForm, formOptions, digest, normalizedMeta, FORMS }
  from '../tools/cases.mjs';

const V = loadVectors();

// One scratch folder per test file, removed at exit (t.after needs Node >= 18.13).
const SCRATCH = fs.mkdtempSync(path.join(os.tmpdir(), 'fastrl-js-'));
process.on('exit', () => fs.rmSync(SCRATCH, { recursive: true, force: true }));
const tmpRoot = () => fs.mkdtempSync(path.join(SCRATCH, 'r'));

function writeCase(root, c, form, extra = {}) {
  const episodes = decode(c.episodes);
  const w = new BatchWriter(root, { ...formOptions(c.options, form, episodes), fsync: false,
    ...extra });
  for (const ep of episodes) w.addEpisode(inForm(ep, form, w.obsDim ?? ep.obs[0].length));
  return w.close();
}

test('vectors were made by the fastrl version this module writes for', () => {
  assert.equal(V.fastrl, FASTRL_VERSION);
});

for (const c of V.cases) {
  test(`case ${c.name}: column bytes and meta.json equal Python's`,
    { skip: c.pending ?? false }, () => {
      const root = tmpRoot();
      // every input form; then tiny buffers (a flush per episode, long episodes in buffers of
      // their own) without and with the write thread
      const runs = [...FORMS.map((f) => [f, {}]), ['plain', { flushBytes: 1, writeThread: false }],
        ['typed', { flushBytes: 700 }], ['flat32', { flushBytes: 1 }]];
      runs.forEach(([form, extra], i) => {
        const batch = writeCase(path.join(root, String(i)), c, form, extra);
        const what = `${c.name} (form ${form}, options ${JSON.stringify(extra)})`;
        assert.deepEqual(digest(batch), c.expected.files, `${what}: column files differ`);
        const text = fs.readFileSync(path.join(batch, 'meta.json'), 'utf8');
        assert.equal(normalizedMeta(text), c.expected.meta, `${what}: meta.json differs`);
        const meta = JSON.parse(text);
        assert.deepEqual(meta.producer, { fastrl: FASTRL_VERSION, backend: 'node' });
        assert.match(meta.createdAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      });
    });
}

for (const c of V.errors) {
  test(`error ${c.name}: same message as Python, writer unchanged and usable`, () => {
    const root = tmpRoot();
    const good = decode(c.good);
    const w = new BatchWriter(root, { ...c.options, fsync: false });
    for (const ep of good) w.addEpisode(ep);
    const before = [w.episodes, w.transitions];
    assert.throws(() => w.addEpisode(decode(c.bad)), (exc) => {
      assert.ok(exc instanceof EpisodeError, `not an EpisodeError: ${exc}`);
      assert.equal(exc.message, c.message);
      assert.equal(exc.episode, good.length);
      return true;
    });
    assert.deepEqual([w.episodes, w.transitions], before);
    // the writer goes on as if the bad episode had never been offered
    if (!good.length) {
      assert.equal(w.close(), null);
      assert.deepEqual(fs.readdirSync(root), []);
      return;
    }
    w.addEpisode(good[0]);
    const meta = JSON.parse(fs.readFileSync(path.join(w.close(), 'meta.json'), 'utf8'));
    assert.equal(meta.episodes, good.length + 1);
  });
}

test('float reprs in meta.json are Python\'s', () => {
  for (const s of V.floatReprs) assert.equal(pyFloatRepr(Number(s)), s);
});

test('CRC-32 equals zlib.crc32 (table-driven and native)', () => {
  const data = new Uint8Array(256 * 40 + 6);
  for (let i = 0; i < 256 * 40; i++) data[i] = i & 255;
  data.set(Buffer.from('fastrl'), 256 * 40);
  const want = parseInt(V.crc32.value, 16);
  assert.equal(crc32js(data), want);
  assert.equal(crc32(data), want);
  assert.equal(crc32js(Buffer.from('123456789')), parseInt(V.crc32.check, 16));
  // streaming in odd pieces gives the same value
  let c = 0;
  for (let i = 0; i < data.length; i += 333) c = crc32js(data.subarray(i, i + 333), c);
  assert.equal(c, want);
  assert.equal(crc32js(new Uint8Array(0)), 0);
  // random data: the JS tables against the native one (when this Node has zlib.crc32)
  const rnd = new Uint8Array(100003);
  let x = 12345;
  for (let i = 0; i < rnd.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    rnd[i] = x >>> 24;
  }
  assert.equal(crc32js(rnd.subarray(1)), crc32(rnd.subarray(1)));
});
