#!/usr/bin/env node
// Throughput of the Node writer beside fs.writeFileSync of the same bytes.
//
//   node bench/bench_writer.mjs [--dir /dev/shm] [--transitions 200000] [--no-fsync] [--no-thread]
//                               [--variants legal,dense,dense-arrays] [--rounds 3]
//
// Episodes of 20-180 steps, obsDim 512 (one Float32Array per episode), 208 actions padded to
// 256 mask columns; masks as legal-id lists (plain arrays), dense Uint8Array rows, or dense plain
// arrays of 0/1. For each variant: the writer's time from the constructor to close() (packing,
// checks, CRC-32 of every file, writes, fsync unless --no-fsync, commit), then the time to
// fs.writeFileSync the very same file bytes (read back from the batch) into a fresh folder, and
// the ratio baseline / writer (1.0 = as fast as writing the bytes alone). Each variant runs
// --rounds times (writer, then baseline, files removed in between); the ratio uses the best
// time of each, the others are printed too.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BatchWriter, crc32 } from '../batch_writer.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const DIR = opt('dir', fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir());
const N = Number(opt('transitions', 200000));
const FSYNC = !args.includes('--no-fsync');
const THREAD = !args.includes('--no-thread');
const VARIANTS = opt('variants', 'legal,dense,dense-arrays').split(',');
const ROUNDS = Number(opt('rounds', 3));
const D = 512;
const A = 208;
const PAD = 256;

let seed = 12345;
const rand = () => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed / 4294967296;
};

function makeEpisodes(variant) {
  const eps = [];
  let left = N;
  while (left > 0) {
    const T = Math.min(left, 20 + Math.floor(rand() * 161));
    left -= T;
    const obs = new Float32Array(T * D);
    for (let i = 0; i < obs.length; i++) obs[i] = rand() * 2 - 1;
    const actions = new Array(T);
    const rewards = new Array(T);
    const legal = variant === 'legal' ? new Array(T) : null;
    const mask = variant === 'legal' ? null : new Array(T);
    for (let t = 0; t < T; t++) {
      const k = 1 + Math.floor(rand() * 40);
      const ids = [];
      for (let j = 0; j < k; j++) ids.push(Math.floor(rand() * A));
      actions[t] = ids[0];
      rewards[t] = rand() - 0.5;
      if (legal) {
        legal[t] = ids;
      } else if (variant === 'dense') {
        const row = new Uint8Array(A);
        for (const id of ids) row[id] = 1;
        mask[t] = row;
      } else {
        const row = new Array(A).fill(0);
        for (const id of ids) row[id] = 1;
        mask[t] = row;
      }
    }
    const ep = { obs, actions, rewards };
    if (legal) ep.legal = legal; else ep.mask = mask;
    eps.push(ep);
  }
  return eps;
}

const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;

function writerRun(eps, root) {
  const t0 = process.hrtime.bigint();
  const c0 = process.cpuUsage();
  const w = new BatchWriter(root, { nActions: A, maskPad: PAD, obsDim: D, fsync: FSYNC,
    writeThread: THREAD });
  for (const ep of eps) w.addEpisode(ep);
  const batch = w.close();
  const cpu = process.cpuUsage(c0);
  return [ms(t0), batch, (cpu.user + cpu.system) / 1000];
}

function plainRun(files, out) {
  const t0 = process.hrtime.bigint();
  fs.mkdirSync(out);
  for (const [f, b] of files) fs.writeFileSync(path.join(out, f), b);
  return ms(t0);
}

function benchVariant(variant) {
  const eps = makeEpisodes(variant);
  const tw = [];
  const tp = [];
  const cw = [];
  let files = null;
  let tCrc = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const root = fs.mkdtempSync(path.join(DIR, 'fastrl-bench-'));
    try {
      const [t, batch, cpu] = writerRun(eps, root);
      tw.push(t);
      cw.push(cpu);
      if (!files) {
        files = fs.readdirSync(batch).map((f) => [f, fs.readFileSync(path.join(batch, f))]);
        const t0 = process.hrtime.bigint();
        for (const [, b] of files) crc32(b);
        tCrc = ms(t0);
      }
      fs.rmSync(batch, { recursive: true, force: true });
      tp.push(plainRun(files, path.join(root, 'plain')));
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  }
  const bytes = files.reduce((s, [, b]) => s + b.length, 0);
  const mb = bytes / 1e6;
  const best = (a) => Math.min(...a);
  const fmt = (a) => a.map((x) => x.toFixed(0)).join('/');
  console.log(`${variant.padEnd(13)} ${eps.length} episodes, ${mb.toFixed(0)} MB: `
    + `writer ${fmt(tw)} ms (best ${(mb / best(tw) * 1000).toFixed(0)} MB/s), `
    + `writeFileSync ${fmt(tp)} ms (best ${(mb / best(tp) * 1000).toFixed(0)} MB/s), `
    + `ratio of bests ${(best(tp) / best(tw)).toFixed(2)}x  [writer CPU ${fmt(cw)} ms, `
    + `crc32 alone ${tCrc.toFixed(0)} ms]`);
}

console.log(`node ${process.version}, dir ${DIR}, fsync ${FSYNC}, write thread ${THREAD}, `
  + `${os.cpus().length} CPUs, load ${os.loadavg()[0].toFixed(2)}, obsDim ${D}, `
  + `${A} actions padded to ${PAD}, native zlib.crc32: ${'crc32' in (await import('node:zlib'))}`);
for (const v of VARIANTS) benchVariant(v);
