#!/usr/bin/env node
// A second, independent reader of the cnnkit bundle format, written from docs/FORMAT.md alone.
// It proves the document is enough: with only a msgpack library it verifies the checksum and reads
// every weight. Usage:  node tools/read_bundle.mjs BUNDLE [--json]
// Prints each weight's name, dtype, shape, the sha256 of its data bytes and the sum of its values
// (FORMAT.md, "Weight fingerprints"). Exit 0 when the bundle checks out, 1 with one line otherwise.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { decode } from "@msgpack/msgpack";

const FORMAT = "cnnkit.bundle";
const READS_MAJOR = 1;
const READS_MINOR = 1;
const ITEMSIZE = {
  float16: 2, float32: 4, float64: 8,
  int8: 1, int16: 2, int32: 4, int64: 8,
  uint8: 1, uint16: 2, uint32: 4, uint64: 8,
  bool: 1,
};

class BundleError extends Error {}

// Ext types are never valid in a bundle; refusing them here means no ext payload is ever decoded.
const noExtensions = {
  tryToEncode: () => null,
  decode: (_data, type) => {
    throw new BundleError(`msgpack extension type ${type} is not allowed in a bundle`);
  },
};

function unpack(bytes, what) {
  const limit = bytes.length;
  try {
    return decode(bytes, {
      extensionCodec: noExtensions,
      useBigInt64: true,
      maxStrLength: limit, maxBinLength: limit, maxArrayLength: limit, maxMapLength: limit,
    });
  } catch (err) {
    throw new BundleError(`${what}: ${err instanceof BundleError ? err.message : `malformed msgpack (${err.message})`}`);
  }
}

const isMap = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Uint8Array);
const hex = (bytes) => createHash("sha256").update(bytes).digest("hex");

function expect(ok, message) {
  if (!ok) throw new BundleError(message);
}

function checkKeys(map, known, where, newerMinor) {
  for (const key of known) expect(Object.hasOwn(map, key), `${where} lacks '${key}'`);
  if (!newerMinor) {
    const extra = Object.keys(map).filter((k) => !known.includes(k));
    expect(extra.length === 0, `${where} has unexpected keys ${JSON.stringify(extra)}`);
  }
}

// IEEE 754 binary16 -> Number (exact: every half is a double).
function halfToNumber(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

// Element i of little-endian `data` as a Number; 64-bit integers round to the nearest double.
function elementReader(dtype, view) {
  switch (dtype) {
    case "float16": return (i) => halfToNumber(view.getUint16(i * 2, true));
    case "float32": return (i) => view.getFloat32(i * 4, true);
    case "float64": return (i) => view.getFloat64(i * 8, true);
    case "int8": return (i) => view.getInt8(i);
    case "int16": return (i) => view.getInt16(i * 2, true);
    case "int32": return (i) => view.getInt32(i * 4, true);
    case "int64": return (i) => Number(view.getBigInt64(i * 8, true));
    case "uint8": return (i) => view.getUint8(i);
    case "uint16": return (i) => view.getUint16(i * 2, true);
    case "uint32": return (i) => view.getUint32(i * 4, true);
    case "uint64": return (i) => Number(view.getBigUint64(i * 8, true));
    case "bool": return (i) => view.getUint8(i);
  }
  throw new BundleError(`dtype ${dtype} is not allowed`);
}

export function readBundle(bytes, source = "bundle") {
  const outer = unpack(bytes, source);
  expect(isMap(outer) && outer.format === FORMAT, `${source}: not a cnnkit bundle (no 'format': '${FORMAT}' marker)`);
  const version = outer.version;
  expect(Array.isArray(version) && version.length === 2 && version.every((v) => typeof v === "number" && Number.isInteger(v) && v >= 0),
    `${source}: 'version' must be [major, minor]`);
  const [major, minor] = version;
  expect(major <= READS_MAJOR, `${source}: bundle format ${major}.${minor} was made by a newer cnnkit; this reader reads ${READS_MAJOR}.x`);
  expect(major === READS_MAJOR, `${source}: bundle format ${major}.${minor} is older than this reader supports`);
  const newer = minor > READS_MINOR;
  checkKeys(outer, ["format", "version", "sha256", "payload"], source, newer);
  expect(outer.sha256 instanceof Uint8Array && outer.sha256.length === 32, `${source}: 'sha256' must be 32 bytes of binary`);
  expect(outer.payload instanceof Uint8Array, `${source}: 'payload' must be binary`);
  const digest = hex(outer.payload);
  expect(digest === Buffer.from(outer.sha256).toString("hex"), `${source}: checksum mismatch: the payload is corrupted or was modified`);

  const body = unpack(outer.payload, `${source}: payload`);
  expect(isMap(body), `${source}: payload must be a map`);
  checkKeys(body, ["spec", "classes", "providers", "training", "weights"], `${source}: payload`, newer);
  expect(isMap(body.weights), `${source}: payload.weights must be a map`);

  const weights = [];
  for (const [name, entry] of Object.entries(body.weights)) {
    const where = `${source}: payload.weights['${name}']`;
    expect(isMap(entry), `${where} must be a map`);
    checkKeys(entry, ["dtype", "shape", "data"], where, newer);
    const { dtype, shape, data } = entry;
    expect(typeof dtype === "string" && Object.hasOwn(ITEMSIZE, dtype), `${where}.dtype ${JSON.stringify(dtype)} is not allowed`);
    expect(Array.isArray(shape) && shape.length <= 8 && shape.every((d) => typeof d === "number" && Number.isInteger(d) && d >= 0),
      `${where}.shape must be an array of at most 8 non-negative integers`);
    expect(data instanceof Uint8Array, `${where}.data must be binary`);
    // BigInt keeps the product exact however large the claimed dimensions are.
    const count = shape.reduce((acc, d) => acc * BigInt(d), 1n);
    expect(count * BigInt(ITEMSIZE[dtype]) === BigInt(data.length),
      `${where}: shape [${shape}] of ${dtype} needs ${count * BigInt(ITEMSIZE[dtype])} bytes of data, found ${data.length}`);
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const element = elementReader(dtype, view);
    let sum = 0;
    for (let i = 0; i < Number(count); i++) sum += element(i);
    weights.push({ name, dtype, shape, sha256: hex(data), sum });
  }
  return { format: FORMAT, version, sha256: digest, classes: body.classes, weights };
}

function main(argv) {
  const args = argv.filter((a) => a !== "--json");
  if (args.length !== 1) {
    process.stderr.write("usage: node tools/read_bundle.mjs BUNDLE [--json]\n");
    return 2;
  }
  let result;
  try {
    let bytes;
    try {
      bytes = readFileSync(args[0]);
    } catch (err) {
      throw new BundleError(`cannot read ${args[0]}: ${err.code ?? err.message}`);
    }
    result = readBundle(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), args[0]);
  } catch (err) {
    if (!(err instanceof BundleError)) throw err;
    process.stderr.write(`error: ${err.message}\n`);
    return 1;
  }
  if (argv.includes("--json")) {
    process.stdout.write(JSON.stringify(result, null, 2) + "\n");
    return 0;
  }
  process.stdout.write(`${args[0]}: format ${result.version.join(".")}, checksum ok (sha256 ${result.sha256})\n`);
  for (const w of result.weights) {
    process.stdout.write(`${w.name}\t${w.dtype}\t[${w.shape.join(", ")}]\tsha256 ${w.sha256}\tsum ${w.sum}\n`);
  }
  return 0;
}

process.exitCode = main(process.argv.slice(2));
