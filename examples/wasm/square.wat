;; square(x: int) -> int, a Squall WebAssembly function in hand-written WAT.
;; Register with result="int":  client.register_wasm("square.wat", "square", result="int")
;;
;; Input at [ptr, ptr+len): u32 count, then (u32 length, bytes) per argument,
;; little-endian. A Python int arrives as 8 bytes (two's complement), so one
;; int argument is: 01 00 00 00 | 08 00 00 00 | x (8 bytes).
(module
  (memory (export "memory") 1)
  ;; A bump allocator from 1024 up; `run` rewinds it once it is done, so a
  ;; reused instance does not grow call after call.
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
    (local $x i64)
    ;; exactly one argument of 8 bytes
    (if (i32.or (i32.ne (i32.load (local.get $ptr)) (i32.const 1))
                (i32.ne (i32.load offset=4 (local.get $ptr)) (i32.const 8)))
      (then unreachable))
    (local.set $x (i64.load offset=8 (local.get $ptr)))
    ;; the result: 8 bytes at address 16 (static, below the heap)
    (i64.store (i32.const 16) (i64.mul (local.get $x) (local.get $x)))
    (global.set $heap (i32.const 1024))
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 8))))
