// Starts Azurite as a child process and stops it when our stdin closes, which happens when the test
// binary that started us exits, however it exits. Without this, an Azurite started from a test
// binary's static would outlive it. Arguments are passed to Azurite unchanged; the `azurite` package is
// looked up from AZURITE_HARNESS_ROOT (the workspace root, set by the harness), or else from the
// workspace root relative to this file (crates/azurite_harness/).
'use strict';
const { spawn } = require('child_process');
const path = require('path');

let entry;
try {
  entry = require.resolve('azurite/dist/src/azurite.js', { paths: [process.env.AZURITE_HARNESS_ROOT || path.join(__dirname, '..', '..')] });
} catch (e) {
  process.stderr.write('azurite-guard: Azurite is not installed; run `npm ci` in the repository root\n');
  process.exit(3);
}
// The preload shortens Azurite's queue GC interval; why is in azurite-preload.cjs.
const preload = path.join(__dirname, 'azurite-preload.cjs');
const child = spawn(process.execPath, ['-r', preload, entry, ...process.argv.slice(2)], { stdio: ['ignore', 'pipe', 'pipe'] });
// Relay Azurite's output; once the test binary is gone its end of the pipe is closed, and a write
// error must not kill us before we have stopped Azurite.
process.stdout.on('error', () => {});
process.stderr.on('error', () => {});
child.stdout.pipe(process.stdout);
child.stderr.pipe(process.stderr);
const stop = () => {
  child.kill('SIGTERM');
  setTimeout(() => child.kill('SIGKILL'), 2000).unref();
};
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.on('error', stop);
process.stdin.resume();
child.on('exit', (code) => process.exit(code === null ? 1 : code));
