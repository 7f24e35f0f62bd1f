#!/usr/bin/env node
import { formatError } from '../dist/src/cli/exit-codes.js';
import { main } from '../dist/src/cli/main.js';

main(process.argv).catch((e) => {
  process.stderr.write(formatError(e));
  process.exit(1);
});
