#!/usr/bin/env node
import { main } from '../dist/src/cli/main.js';

main(process.argv).catch((e) => {
  process.stderr.write(`trellis: ${e?.code ? `${e.code}: ` : ''}${e?.message ?? e}\n`);
  process.exit(1);
});
