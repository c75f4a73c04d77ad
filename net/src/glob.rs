//! Redis-style glob patterns, as KEYS, SCAN MATCH and CONFIG GET take
//! them: `*` (any run of bytes), `?` (any one byte), `[abc]`, `[a-z]` and
//! `[^abc]` (one byte in, or not in, a class), and `\x` (the byte `x`).
//! A class that is never closed runs to the end of the pattern, a reversed
//! range (`[z-a]`) is the same as `[a-z]`, and the empty key matches only
//! `*` and the empty pattern, as in Redis's KEYS and SCAN.
//!
//! Matching is iterative and remembers only the last `*`: every other
//! token matches exactly one byte, so when the text after a `*` fails, the
//! only choice worth trying again is to let that `*` take one more byte.
//! That bounds a match at `O(len(pattern) * len(text))` steps with no
//! recursion. (A recursive matcher that backtracks into every `*` takes
//! exponential time on patterns like `*a*a*a*a*b`, and one stack frame per
//! `*`: 40,000 stars in a CONFIG GET overflowed a shard thread's stack,
//! which aborts the server. Redis's CVE-2022-36021 is the same bug.)

/// A pattern checked against many texts (KEYS, SCAN MATCH): what does not
/// depend on the text is computed once.
#[derive(Debug, Clone, Copy)]
pub struct Glob<'p> {
    pattern: &'p [u8],
    /// Tokens other than `*`: each takes one byte, so a shorter text
    /// cannot match. It cuts off patterns far longer than any key at once.
    bytes_min: usize,
}

impl<'p> Glob<'p> {
    pub fn new(pattern: &'p [u8]) -> Glob<'p> {
        let mut bytes_min = 0;
        let mut at = 0;
        while at < pattern.len() {
            if pattern[at] == b'*' {
                at += 1;
            } else {
                bytes_min += 1;
                at = token(pattern, at, 0).0;
            }
        }
        Glob { pattern, bytes_min }
    }

    pub fn matches(&self, text: &[u8]) -> bool {
        if text.len() < self.bytes_min {
            return false;
        }
        if text.is_empty() {
            // Redis's matcher takes nothing but the empty pattern for the
            // empty key; its KEYS and SCAN list every key for `*` without
            // calling it.
            return self.pattern.is_empty() || self.pattern == b"*";
        }
        let p = self.pattern;
        let (mut pi, mut ti) = (0, 0);
        // After the last `*` seen: where its rest of the pattern starts,
        // and the first byte of the text not yet given to the `*`.
        let mut star: Option<(usize, usize)> = None;
        loop {
            if p.get(pi) == Some(&b'*') {
                pi += 1;
                star = Some((pi, ti));
                continue;
            }
            let Some(&byte) = text.get(ti) else {
                // The text is used up; only stars may be left, and a `*`
                // taking more bytes cannot help.
                return pi == p.len();
            };
            if pi < p.len() {
                let (next, hit) = token(p, pi, byte);
                if hit {
                    pi = next;
                    ti += 1;
                    continue;
                }
            }
            match star {
                Some((rest, given)) => {
                    star = Some((rest, given + 1));
                    pi = rest;
                    ti = given + 1;
                }
                None => return false,
            }
        }
    }
}

/// One call: whether `text` matches `pattern`.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    Glob::new(pattern).matches(text)
}

/// The token (not `*`) starting at `p[at]`: where the next one starts,
/// and whether it matches `byte`.
fn token(p: &[u8], at: usize, byte: u8) -> (usize, bool) {
    match p[at] {
        b'?' => (at + 1, true),
        b'\\' if at + 1 < p.len() => (at + 2, p[at + 1] == byte),
        b'[' => class(p, at + 1, byte),
        literal => (at + 1, literal == byte),
    }
}

/// A class whose body starts at `p[at]` (past the `[`).
fn class(p: &[u8], mut at: usize, byte: u8) -> (usize, bool) {
    let negated = p.get(at) == Some(&b'^');
    if negated {
        at += 1;
    }
    let mut hit = false;
    loop {
        match p.get(at) {
            None => break,
            Some(b']') => {
                at += 1;
                break;
            }
            Some(b'\\') if at + 1 < p.len() => {
                hit |= p[at + 1] == byte;
                at += 2;
            }
            Some(&low) if at + 2 < p.len() && p[at + 1] == b'-' => {
                let high = p[at + 2];
                let (low, high) = if low <= high { (low, high) } else { (high, low) };
                hit |= (low..=high).contains(&byte);
                at += 3;
            }
            Some(&b) => {
                hit |= b == byte;
                at += 1;
            }
        }
    }
    (at, hit != negated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_redis() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"*", b"anything", true),
            (b"*", b"", true),
            (b"**", b"", false),
            (b"?*", b"", false),
            (b"", b"", true),
            (b"", b"a", false),
            (b"max*", b"maxmemory", true),
            (b"h?llo", b"hello", true),
            (b"h?llo", b"hllo", false),
            (b"h[ae]llo", b"hallo", true),
            (b"h[ae]llo", b"hillo", false),
            (b"h[^e]llo", b"hallo", true),
            (b"h[^e]llo", b"hello", false),
            (b"h[a-b]llo", b"hbllo", true),
            (b"h[a-b]llo", b"hcllo", false),
            (b"h[b-a]llo", b"hallo", true),
            (b"h[\\]]llo", b"h]llo", true),
            (b"h\\*llo", b"h*llo", true),
            (b"h\\*llo", b"hello", false),
            (b"a\\", b"a\\", true),
            (b"h[ae", b"ha", true),
            (b"h[ae", b"hae", false),
            (b"save", b"saver", false),
            (b"*a*b", b"xaxxb", true),
            (b"*a*b", b"xaxxbx", false),
            (b"a*b*c", b"abbbc", true),
            (b"a**c", b"ac", true),
            (b"user:*:name", b"user:42:name", true),
            (b"user:*:name", b"user:42:names", false),
        ];
        for &(pattern, text, expected) in cases {
            assert_eq!(
                glob_match(pattern, text),
                expected,
                "{:?} against {:?}",
                String::from_utf8_lossy(pattern),
                String::from_utf8_lossy(text)
            );
        }
    }

    /// A recursive matcher, exponential but obviously right, to check the
    /// iterative one against on small random inputs.
    fn reference(p: &[u8], t: &[u8]) -> bool {
        if t.is_empty() {
            return p.is_empty() || p == b"*";
        }
        reference_nonempty(p, t)
    }

    fn reference_nonempty(p: &[u8], t: &[u8]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some(b'*') => reference_nonempty(&p[1..], t) || (!t.is_empty() && reference_nonempty(p, &t[1..])),
            Some(_) => match t.first() {
                None => false,
                Some(&byte) => {
                    let (next, hit) = token(p, 0, byte);
                    hit && reference_nonempty(&p[next..], &t[1..])
                }
            },
        }
    }

    #[test]
    fn agrees_with_a_backtracking_matcher() {
        let alphabet = b"ab*?[]^-\\";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..20_000 {
            let p: Vec<u8> = (0..next(8)).map(|_| alphabet[next(alphabet.len())]).collect();
            let t: Vec<u8> = (0..next(8)).map(|_| b"ab]-"[next(4)]).collect();
            assert_eq!(glob_match(&p, &t), reference(&p, &t), "{:?} against {:?}", p, t);
        }
    }

    #[test]
    fn pathological_patterns_are_quick_and_use_no_stack() {
        // 40,000 stars overflowed the stack of the recursive matcher.
        let stars = vec![b'*'; 40_000];
        assert!(glob_match(&stars, b"proto-max-bulk-len"));
        // Exponential for a matcher that backtracks into every star.
        let mut p = b"*a".repeat(40);
        p.push(b'x');
        let text = vec![b'a'; 200];
        assert!(!glob_match(&p, &text));
        // Longer than the text in non-star tokens: refused before matching.
        assert!(!Glob::new(&vec![b'?'; 1 << 20]).matches(b"short"));
    }
}
