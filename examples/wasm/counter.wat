;; counter(key: str) -> int: adds one to the count stored under `key` in the
;; KVS and returns the new count, through the host imports `squall.get` and
;; `squall.put`. Register with result="int".
;;
;; The count is 8 bytes, little-endian: what `get` gives for a Python int that
;; `client.put(key, 41)` stored, and what this function `put`s back (a Python
;; `client.get(key)` then reads bytes: int.from_bytes(value, "little")). A
;; missing key counts from 0; a value of another length is a trap.
(module
  ;; get(key_ptr, key_len) -> (ptr << 32) | len of the value (in memory from
  ;; `alloc`), or -1 if the key has no value.
  (import "squall" "get" (func $get (param i32 i32) (result i64)))
  ;; put(key_ptr, key_len, val_ptr, val_len) -> 0 when stored.
  (import "squall" "put" (func $put (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "alloc") (param $len i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (local.set $p (global.get $heap))
    (local.set $end (i32.and (i32.add (i32.add (local.get $p) (local.get $len)) (i32.const 7))
                             (i32.const -8)))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then (if (i32.lt_s (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have))
                                                           (i32.const 65535))
                                                  (i32.const 16)))
                          (i32.const 0))
              (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $p))
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $key i32) (local $key_len i32) (local $got i64) (local $count i64)
    (if (i32.ne (i32.load (local.get $ptr)) (i32.const 1)) (then unreachable))
    (local.set $key_len (i32.load offset=4 (local.get $ptr)))
    (local.set $key (i32.add (local.get $ptr) (i32.const 8)))
    (local.set $got (call $get (local.get $key) (local.get $key_len)))
    (if (i64.ne (local.get $got) (i64.const -1))
      (then
        (if (i64.ne (i64.and (local.get $got) (i64.const 0xffffffff)) (i64.const 8))
          (then unreachable))
        (local.set $count (i64.load (i32.wrap_i64 (i64.shr_u (local.get $got) (i64.const 32)))))))
    (i64.store (i32.const 16) (i64.add (local.get $count) (i64.const 1)))
    (if (i32.ne (call $put (local.get $key) (local.get $key_len) (i32.const 16) (i32.const 8))
                (i32.const 0))
      (then unreachable))
    (global.set $heap (i32.const 1024))
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 8))))
