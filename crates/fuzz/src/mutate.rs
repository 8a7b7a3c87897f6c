//! Inputs from one seeded RNG: arbitrary bytes or text, and valid inputs mutated by bit
//! flips, truncation, inflated length fields, splices, duplicated and deleted chunks,
//! and for text formats replaced numbers, inserted tokens and deep nesting.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// No generated input is longer: big enough for every seed and its duplicated chunks,
/// small enough for a million cases in minutes.
pub const MAX_INPUT: usize = 64 << 10;

/// Values that sit on the edges a length or count check has.
const EDGE_U64: [u64; 18] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    4096,
    4097,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    i64::MAX as u64,
    u64::MAX - 1,
    u64::MAX,
];

/// Numbers as JSON or TOML text: edges of u16, u32, u64, f64 and what overflows them.
const EDGE_NUMBERS: [&str; 22] = [
    "0",
    "-0",
    "-1",
    "1",
    "4096",
    "4097",
    "65535",
    "65536",
    "1048576",
    "1048577",
    "2097152",
    "4294967295",
    "4294967296",
    "9007199254740993",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "1e400",
    "1.5",
    "-1e-400",
    "0x10",
    "99999999999999999999999999999",
];

/// Pieces of JSON and TOML syntax, escapes, and bytes that are not UTF-8.
const TOKENS: [&[u8]; 32] = [
    b"[",
    b"]",
    b"{",
    b"}",
    b"\"",
    b",",
    b":",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"\\uDFFF",
    b"null",
    b"true",
    b"false",
    b"=",
    b"[[",
    b"]]",
    b"\n",
    b"#",
    b"'''",
    b"\"\"\"",
    "é".as_bytes(),
    "\u{10ffff}".as_bytes(),
    b"\xff",
    b"\x00",
    b"1979-05-27T07:32:00Z",
    b"inf",
    b"nan",
    b"a.b.c",
    b"\"\":",
    b"{\"\":[]}",
    b"\r",
];

fn pos(rng: &mut ChaCha8Rng, len: usize) -> usize {
    rng.gen_range(0..=len)
}

/// A random range inside `0..len`, mostly short.
fn range(rng: &mut ChaCha8Rng, len: usize) -> (usize, usize) {
    let a = pos(rng, len);
    let max = (len - a).min(if rng.gen_bool(0.8) { 64 } else { 4096 });
    (a, a + rng.gen_range(0..=max))
}

/// Arbitrary input: random bytes, or random tokens and printable characters for text.
pub fn arbitrary(rng: &mut ChaCha8Rng, text: bool) -> Vec<u8> {
    let len = match rng.gen_range(0..4) {
        0 => rng.gen_range(0..16),
        1 => rng.gen_range(0..256),
        2 => rng.gen_range(0..4096),
        _ => rng.gen_range(0..MAX_INPUT / 4),
    };
    let mut b = Vec::with_capacity(len);
    while b.len() < len {
        if text && rng.gen_bool(0.3) {
            b.extend_from_slice(TOKENS[rng.gen_range(0..TOKENS.len())]);
        } else if text {
            b.push(rng.gen_range(0x20..0x7f));
        } else {
            b.push(rng.gen());
        }
    }
    b
}

/// `input` with one to four mutations; `others` are splice material (the target's seeds).
pub fn mutate(rng: &mut ChaCha8Rng, input: &[u8], others: &[Vec<u8>], text: bool) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        mutate_once(rng, &mut b, others, text);
        b.truncate(MAX_INPUT);
    }
    b
}

fn mutate_once(rng: &mut ChaCha8Rng, b: &mut Vec<u8>, others: &[Vec<u8>], text: bool) {
    let kinds = if text { 11 } else { 8 };
    match rng.gen_range(0..kinds) {
        0 => flip_bits(rng, b),
        1 => set_bytes(rng, b),
        2 => {
            let at = pos(rng, b.len());
            b.truncate(at);
        }
        3 => inflate_length(rng, b),
        4 => splice(rng, b, others),
        5 => duplicate_chunk(rng, b),
        6 => {
            let (x, y) = range(rng, b.len());
            b.drain(x..y);
        }
        7 => {
            let at = pos(rng, b.len());
            let n = rng.gen_range(1..=16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            b.splice(at..at, bytes);
        }
        8 => replace_number(rng, b),
        9 => {
            let at = pos(rng, b.len());
            let t = TOKENS[rng.gen_range(0..TOKENS.len())];
            b.splice(at..at, t.iter().copied());
        }
        _ => nest(rng, b),
    }
}

fn flip_bits(rng: &mut ChaCha8Rng, b: &mut [u8]) {
    if b.is_empty() {
        return;
    }
    for _ in 0..rng.gen_range(1..=8) {
        let i = rng.gen_range(0..b.len());
        b[i] ^= 1 << rng.gen_range(0..8);
    }
}

fn set_bytes(rng: &mut ChaCha8Rng, b: &mut [u8]) {
    if b.is_empty() {
        return;
    }
    for _ in 0..rng.gen_range(1..=4) {
        let i = rng.gen_range(0..b.len());
        b[i] = [0, 1, 0x7f, 0x80, 0xff, rng.gen()][rng.gen_range(0..6)];
    }
}

/// Finds what looks like a length or count (a little-endian u64 as the codec writes
/// them, or a big-endian u32 as a frame header) no larger than the input, and makes it
/// claim more, or less, than there is.
fn inflate_length(rng: &mut ChaCha8Rng, b: &mut [u8]) {
    let len = b.len() as u64;
    let mut candidates: Vec<(usize, bool)> = Vec::new();
    for i in 0..b.len().saturating_sub(3) {
        if let Some(w) = b.get(i..i + 8) {
            let v = u64::from_le_bytes(w.try_into().unwrap_or_default());
            if v > 0 && v <= len {
                candidates.push((i, true));
            }
        }
        if let Some(w) = b.get(i..i + 4) {
            let v = u64::from(u32::from_be_bytes(w.try_into().unwrap_or_default()));
            if v > 0 && v <= len {
                candidates.push((i, false));
            }
        }
    }
    let (i, le64) = if candidates.is_empty() {
        (rng.gen_range(0..=b.len().saturating_sub(8)), rng.gen())
    } else {
        candidates[rng.gen_range(0..candidates.len())]
    };
    let old = match b.get(i..i + 8) {
        Some(w) if le64 => u64::from_le_bytes(w.try_into().unwrap_or_default()),
        _ => 0,
    };
    let new = match rng.gen_range(0..4) {
        0 => old.wrapping_add(1),
        1 => old.wrapping_sub(1),
        2 => old.wrapping_mul(rng.gen_range(2..=1000)),
        _ => EDGE_U64[rng.gen_range(0..EDGE_U64.len())],
    };
    if le64 {
        if let Some(w) = b.get_mut(i..i + 8) {
            w.copy_from_slice(&new.to_le_bytes());
        }
    } else if let Some(w) = b.get_mut(i..i + 4) {
        w.copy_from_slice(&(new as u32).to_be_bytes());
    }
}

fn splice(rng: &mut ChaCha8Rng, b: &mut Vec<u8>, others: &[Vec<u8>]) {
    if others.is_empty() {
        return;
    }
    let o = &others[rng.gen_range(0..others.len())];
    let (x, y) = range(rng, o.len());
    let at = pos(rng, b.len());
    if rng.gen() {
        b.splice(at..at, o[x..y].iter().copied());
    } else {
        let end = (at + (y - x)).min(b.len());
        b.splice(at..end, o[x..y].iter().copied());
    }
}

fn duplicate_chunk(rng: &mut ChaCha8Rng, b: &mut Vec<u8>) {
    let (x, y) = range(rng, b.len());
    let chunk = b[x..y].to_vec();
    for _ in 0..rng.gen_range(1..=16) {
        if b.len() + chunk.len() > MAX_INPUT {
            break;
        }
        b.splice(y..y, chunk.iter().copied());
    }
}

/// Replaces one number of a text input with an edge value.
fn replace_number(rng: &mut ChaCha8Rng, b: &mut Vec<u8>) {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = if i > 0 && b[i - 1] == b'-' { i - 1 } else { i };
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    if runs.is_empty() {
        return;
    }
    let (x, y) = runs[rng.gen_range(0..runs.len())];
    let n = EDGE_NUMBERS[rng.gen_range(0..EDGE_NUMBERS.len())];
    b.splice(x..y, n.bytes());
}

/// Opens many arrays or tables at one place: parsers must refuse deep nesting before
/// they run out of stack.
fn nest(rng: &mut ChaCha8Rng, b: &mut Vec<u8>) {
    let opener: &[u8] = [b"[".as_slice(), b"{\"a\":", b"a=[", b"{a="][rng.gen_range(0..4)];
    let depth = rng.gen_range(1..=2000);
    let at = pos(rng, b.len());
    let mut open = Vec::with_capacity(opener.len() * depth);
    for _ in 0..depth {
        open.extend_from_slice(opener);
    }
    b.splice(at..at, open);
}
