// A Squall WebAssembly function written in AssemblyScript:
// wordcount(*texts: str) -> int, the number of whitespace-separated words in
// all its arguments. Register it with result="int" (see ../../wasm_quickstart.py).
//
// Calling convention (client-py/README.md, "WebAssembly functions"): the host
// asks `alloc` for room, writes the arguments there as a u32 count and then
// (u32 length, bytes) per argument, all little-endian, and calls
// `run(ptr, len)`, which returns (result_ptr << 32) | result_len.

// The 8-byte result lives in static memory, so it needs no allocation.
const RESULT: usize = memory.data(8);

export function alloc(len: i32): i32 {
  return <i32>heap.alloc(<usize>len);
}

function isSpace(c: u8): bool {
  return c == 32 || (c >= 9 && c <= 13);
}

export function run(ptr: i32, len: i32): i64 {
  const base = <usize>ptr;
  const end = base + <usize>len;
  const count = load<u32>(base);
  let at = base + 4;
  let words: i64 = 0;
  for (let i: u32 = 0; i < count && at + 4 <= end; i++) {
    const n = <usize>load<u32>(at);
    at += 4;
    let inWord = false;
    for (let j: usize = 0; j < n && at + j < end; j++) {
      const space = isSpace(load<u8>(at + j));
      if (!space && !inWord) words++;
      inWord = !space;
    }
    at += n;
  }
  // The stub runtime frees the most recent block: the input, so a reused
  // instance does not grow call after call.
  heap.free(base);
  store<i64>(RESULT, words);
  return (<i64>RESULT << 32) | 8;
}
