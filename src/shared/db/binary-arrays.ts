/**
 * Number arrays read in PostgreSQL's binary array format (`array_send(column)`, a bytea) instead
 * of the text `{…}` form: node-pg parses a text array element by element in JavaScript, which at
 * 10,000 × 256-dimension vectors took seconds (`npm run bench -- --only archive`); the binary
 * form is read with a DataView.
 *
 * Layout (src/backend/utils/adt/arrayfuncs.c, array_send): int32 ndim, int32 has-nulls flag,
 * uint32 element type oid, then (int32 length, int32 lower bound) per dimension, then per element
 * an int32 byte length (-1 for NULL) and the element's own binary form, all big-endian.
 */

const FLOAT8_OID = 701;
const INT4_OID = 23;

function decode(buffer: Buffer, expectedOid: number, width: number, read: (view: DataView, offset: number) => number): number[] {
  if (buffer.length < 12) throw new Error('binary array: truncated header');
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const ndim = view.getInt32(0);
  const oid = view.getUint32(8);
  if (ndim === 0) return [];
  if (oid !== expectedOid) throw new Error(`binary array: element type ${oid}, expected ${expectedOid}`);
  let count = 1;
  for (let d = 0; d < ndim; d++) count *= view.getInt32(12 + d * 8);
  const values = new Array<number>(count);
  let offset = 12 + ndim * 8;
  for (let i = 0; i < count; i++) {
    const length = view.getInt32(offset);
    offset += 4;
    if (length < 0) {
      values[i] = Number.NaN;
      continue;
    }
    if (length !== width) throw new Error(`binary array: element of ${length} bytes, expected ${width}`);
    values[i] = read(view, offset);
    offset += width;
  }
  return values;
}

/** A `double precision[]` sent as `array_send(column)`; NULL elements become NaN. */
export function float8Array(buffer: Buffer): number[] {
  return decode(buffer, FLOAT8_OID, 8, (view, offset) => view.getFloat64(offset));
}

/** An `integer[]` sent as `array_send(column)`. */
export function int4Array(buffer: Buffer): number[] {
  return decode(buffer, INT4_OID, 4, (view, offset) => view.getInt32(offset));
}
