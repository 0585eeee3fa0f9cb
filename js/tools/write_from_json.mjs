#!/usr/bin/env node
// Write batches with the Node writer from JSON episodes (used by tests/test_js_writer.py).
//
//   node js/tools/write_from_json.mjs INPUT.json
//
// INPUT.json: {"root": DIR, "cases": [{"name", "options", "episodes", "form"?}]}; each case is
// written into DIR/<name>/ (form: plain, typed, flat or flat32; default plain). Prints
// {"<name>": "<batch path>"} as JSON. Episodes may use "NaN"/"Infinity"/"-Infinity" strings.

import fs from 'node:fs';
import path from 'node:path';
import { BatchWriter } from '../batch_writer.mjs';
import { decode, inForm, formOptions } from './cases.mjs';

const [input] = process.argv.slice(2);
if (!input) {
  console.error('usage: node write_from_json.mjs INPUT.json');
  process.exit(2);
}
const job = JSON.parse(fs.readFileSync(input, 'utf8'));
const out = {};
for (const c of job.cases) {
  const form = c.form ?? 'plain';
  const episodes = decode(c.episodes);
  const w = new BatchWriter(path.join(job.root, c.name), formOptions(c.options, form, episodes));
  try {
    for (const ep of episodes) w.addEpisode(inForm(ep, form, w.obsDim ?? ep.obs[0].length));
  } catch (exc) {
    w.abort();
    throw exc;
  }
  out[c.name] = w.close();
}
process.stdout.write(JSON.stringify(out) + '\n');
