//! The bytes of the calling convention, with no wasmtime in sight: the
//! argument block, the packed `(ptr << 32) | len` of results and returned
//! buffers, and bounds-checked reads of guest memory.

/// The largest argument block or returned buffer: `alloc` takes an `i32`.
pub const MAX_BLOCK: usize = i32::MAX as usize;

/// Encodes the argument block: a u32 little-endian count, then each
/// argument as a u32 little-endian length and its bytes. `Err` names the
/// limit when the block would not fit in 2 GiB.
pub fn encode_args(args: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    let total = args
        .iter()
        .try_fold(4usize, |n, a| n.checked_add(4 + a.len()));
    match total {
        Some(n) if n <= MAX_BLOCK => {
            let mut block = Vec::with_capacity(n);
            block.extend_from_slice(&(args.len() as u32).to_le_bytes());
            for a in args {
                block.extend_from_slice(&(a.len() as u32).to_le_bytes());
                block.extend_from_slice(a);
            }
            Ok(block)
        }
        _ => Err(format!(
            "the arguments take more than {MAX_BLOCK} bytes, the most a WebAssembly function receives"
        )),
    }
}

/// Decodes an argument block (what a guest does); `None` if it is
/// truncated or has bytes left over.
pub fn decode_args(block: &[u8]) -> Option<Vec<&[u8]>> {
    let (count, mut rest) = split_u32(block)?;
    let mut args = Vec::new();
    for _ in 0..count {
        let (len, after) = split_u32(rest)?;
        let len = usize::try_from(len).ok()?;
        if after.len() < len {
            return None;
        }
        let (arg, after) = after.split_at(len);
        args.push(arg);
        rest = after;
    }
    rest.is_empty().then_some(args)
}

fn split_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*head), rest))
}

/// `(ptr << 32) | len`, as the guest's result and the host's returned
/// buffers are packed.
pub fn pack(ptr: u32, len: u32) -> i64 {
    ((u64::from(ptr) << 32) | u64::from(len)) as i64
}

/// The `(ptr, len)` of a packed `i64`.
pub fn unpack(packed: i64) -> (u32, u32) {
    let bits = packed as u64;
    ((bits >> 32) as u32, bits as u32)
}

/// The `len` bytes at `ptr` of guest memory; `None` if any lies outside.
pub fn guest_slice(memory: &[u8], ptr: u32, len: u32) -> Option<&[u8]> {
    let start = usize::try_from(ptr).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    memory.get(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_argument_block_is_a_count_then_length_prefixed_arguments() {
        let block = encode_args(&[b"ab".to_vec(), vec![], 41i64.to_le_bytes().to_vec()]).unwrap();
        let mut expected = vec![3, 0, 0, 0, 2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0, 8, 0, 0, 0];
        expected.extend_from_slice(&[41, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(block, expected);
        assert_eq!(
            decode_args(&block).unwrap(),
            vec![&b"ab"[..], &[][..], &41i64.to_le_bytes()[..]]
        );
        assert_eq!(encode_args(&[]).unwrap(), vec![0, 0, 0, 0]);
    }

    #[test]
    fn a_truncated_or_overlong_block_does_not_decode() {
        let block = encode_args(&[b"xyz".to_vec()]).unwrap();
        assert_eq!(decode_args(&block[..block.len() - 1]), None);
        assert_eq!(decode_args(&block[..3]), None);
        let mut longer = block.clone();
        longer.push(0);
        assert_eq!(decode_args(&longer), None);
    }

    #[test]
    fn results_pack_pointer_high_and_length_low() {
        assert_eq!(pack(0x10, 3), 0x0000_0010_0000_0003);
        assert_eq!(unpack(0x0000_0010_0000_0003), (0x10, 3));
        // A pointer in the upper half of a 4 GiB memory makes the i64
        // negative; it still unpacks.
        let high = pack(0xFFFF_0000, 7);
        assert!(high < 0);
        assert_eq!(unpack(high), (0xFFFF_0000, 7));
        assert_eq!(unpack(-1), (u32::MAX, u32::MAX));
    }

    #[test]
    fn guest_reads_are_bounds_checked() {
        let memory = [1u8, 2, 3, 4];
        assert_eq!(guest_slice(&memory, 1, 2), Some(&[2u8, 3][..]));
        assert_eq!(guest_slice(&memory, 4, 0), Some(&[][..]));
        assert_eq!(guest_slice(&memory, 3, 2), None);
        assert_eq!(guest_slice(&memory, u32::MAX, u32::MAX), None);
    }
}
