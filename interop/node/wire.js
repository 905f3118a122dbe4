'use strict';
// Shared by server.js and client.js: requests and replies are google.protobuf.StringValue
// messages (field 1, a string), encoded by hand so that no generated code is needed.

function encodeString(s) {
  const b = Buffer.from(s, 'utf8');
  const len = [];
  let n = b.length;
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n) byte |= 0x80;
    len.push(byte);
  } while (n);
  return Buffer.concat([Buffer.from([0x0a, ...len]), b]);
}

function decodeString(b) {
  if (!b || b.length === 0) return '';
  if (b[0] !== 0x0a) throw new Error('not a StringValue');
  let n = 0, shift = 0, i = 1;
  for (;;) {
    const byte = b[i++];
    n |= (byte & 0x7f) << shift;
    if (!(byte & 0x80)) break;
    shift += 7;
  }
  return b.subarray(i, i + n).toString('utf8');
}

// parseArgs turns --key value pairs into an object.
function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
  return out;
}

module.exports = { encodeString, decodeString, parseArgs };
