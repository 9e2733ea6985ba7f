//! Python's `repr` of the plain values a pickle holds: integers of any
//! size, floats, strings and bytes.

/// Marks where printing stopped (once).
pub(super) fn cut(out: &mut String) {
    if !out.ends_with("...") {
        out.push_str("...");
    }
}

/// Integers longer than this print as their size: Python itself refuses
/// to print more than 4,300 digits, and the division below is quadratic.
const MAX_INT_BYTES: usize = 1792;

/// A little-endian two's complement integer in decimal.
pub(super) fn int_repr(le: &[u8]) -> String {
    if le.len() > MAX_INT_BYTES {
        return format!("<int of {} bytes>", le.len());
    }
    let negative = le.last().is_some_and(|b| b & 0x80 != 0);
    // The magnitude, big-endian.
    let mut magnitude: Vec<u8> = le.iter().rev().copied().collect();
    if negative {
        for b in &mut magnitude {
            *b = !*b;
        }
        for b in magnitude.iter_mut().rev() {
            let (v, carry) = b.overflowing_add(1);
            *b = v;
            if !carry {
                break;
            }
        }
    }
    // Repeated division by 10^9 of the big-endian base-256 number.
    let mut chunks: Vec<u32> = Vec::new();
    while magnitude.iter().any(|b| *b != 0) {
        let mut rest: u64 = 0;
        for b in &mut magnitude {
            let cur = (rest << 8) | u64::from(*b);
            *b = (cur / 1_000_000_000) as u8;
            rest = cur % 1_000_000_000;
        }
        chunks.push(rest as u32);
    }
    let mut s = String::from(if negative { "-" } else { "" });
    match chunks.split_last() {
        None => s.push('0'),
        Some((first, rest)) => {
            s.push_str(&first.to_string());
            for c in rest.iter().rev() {
                s.push_str(&format!("{c:09}"));
            }
        }
    }
    s
}

/// A float as Python's `repr` writes it: the shortest digits that read
/// back the same, positional from 1e-4 up to 1e16, else with an exponent.
pub(super) fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let body = if (-4..16).contains(&exp) {
        if exp >= 0 {
            let point = exp as usize + 1;
            let mut d = digits.clone();
            while d.len() < point {
                d.push('0');
            }
            let (int, frac) = d.split_at(point);
            format!("{int}.{}", if frac.is_empty() { "0" } else { frac })
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{first}{frac}e{esign}{:02}", exp.unsigned_abs())
    };
    format!("{sign}{body}")
}

/// The quote Python's `repr` picks: `'`, unless the text has one and no `"`.
fn quote_for(has_single: bool, has_double: bool) -> char {
    if has_single && !has_double {
        '"'
    } else {
        '\''
    }
}

pub(super) fn str_repr(s: &str) -> String {
    let q = quote_for(s.contains('\''), s.contains('"'));
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let n = u32::from(c);
                if n <= 0xff {
                    out.push_str(&format!("\\x{n:02x}"));
                } else {
                    out.push_str(&format!("\\u{n:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

pub(super) fn bytes_repr(b: &[u8]) -> String {
    let q = quote_for(b.contains(&b'\''), b.contains(&b'"'));
    let mut out = String::with_capacity(b.len() + 3);
    out.push('b');
    out.push(q);
    for &c in b {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            c if char::from(c) == q => {
                out.push('\\');
                out.push(q);
            }
            0x20..=0x7e => out.push(char::from(c)),
            c => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out.push(q);
    out
}
