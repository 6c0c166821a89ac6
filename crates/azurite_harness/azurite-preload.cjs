// Loaded into Azurite's process before Azurite itself (`node -r`), by azurite-guard.cjs.
//
// In memory, Azurite keeps every queue message in an extent of its own, and its queue GC deletes
// the spent ones one by one from a LokiJS collection indexed on their id: each deletion costs time
// in proportion to the extents still there, so a sweep costs the square of what was spent since the
// last one. Every 60 s (Azurite's interval), a test suite that moves a few thousand messages a
// minute blocks all of Azurite's services for tens of seconds and its requests time out (measured:
// 3,614 extents, 19 s). Sweeping every 5 s keeps each sweep small (a twelfth of the extents, about a
// hundred-and-fortieth of the time) and changes nothing a client can see: spent extents hold
// nothing any request can read. `AZURITE_QUEUE_GC_INTERVAL_MS` overrides the interval.
'use strict';
const path = require('path');

const root = process.env.AZURITE_HARNESS_ROOT || path.join(__dirname, '..', '..');
const constants = require(require.resolve('azurite/dist/src/queue/utils/constants.js', { paths: [root] }));
const interval = Number(process.env.AZURITE_QUEUE_GC_INTERVAL_MS || 5000);
if (!(typeof constants.DEFAULT_GC_INTERVAL_MS === 'number' && interval > 0)) {
  // A new Azurite without the constant, or a bad setting: say so rather than run at 60 s unseen.
  process.stderr.write(`azurite-preload: cannot set the queue GC interval (Azurite's constant: ${constants.DEFAULT_GC_INTERVAL_MS}, wanted: ${interval})\n`);
  process.exit(4);
}
constants.DEFAULT_GC_INTERVAL_MS = interval;
