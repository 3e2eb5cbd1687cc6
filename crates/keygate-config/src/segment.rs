//! One segment of a path template (`items`, `{id}`, `{name}.{ext}.json`):
//! parsing, matching a request segment, and whether two templates' segments
//! can match the same text.
//!
//! A segment compiles to a pattern of bytes, "any one byte" and "any run of
//! bytes": a parameter is "any one" then "any run", since it matches at
//! least one character. Matching uses the classic wildcard algorithm that
//! only ever backtracks to the last "any run": at most (pattern length + 1)
//! x (text length + 1) steps, so `{a}.{b}.{c}.json` against a segment of
//! thousands of dots costs microseconds, where a backtracking matcher took
//! seconds (it tried every split of the dots between the parameters).

use std::collections::VecDeque;

use crate::request_path::decode_segment;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Segment(Vec<Token>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Token {
    Byte(u8),
    AnyOne,
    AnyRun,
}

impl Segment {
    /// Parses one template segment; `None` when its braces are unbalanced
    /// or empty, two parameters are adjacent (they could not be told
    /// apart), or its text is not a valid path segment (`%2f`, a bad `%`).
    /// The text is decoded like request paths, so `%73` in a template
    /// means `s`.
    pub fn parse(segment: &str) -> Option<Self> {
        let mut tokens = Vec::new();
        let mut rest = segment;
        let mut last_was_param = false;
        while !rest.is_empty() {
            if let Some(after_open) = rest.strip_prefix('{') {
                let close = after_open.find('}')?;
                let name = &after_open[..close];
                if name.is_empty() || name.contains('{') || last_was_param {
                    return None;
                }
                tokens.extend([Token::AnyOne, Token::AnyRun]);
                last_was_param = true;
                rest = &after_open[close + 1..];
            } else {
                let end = rest.find(['{', '}']).unwrap_or(rest.len());
                if end == 0 {
                    return None; // a stray `}`
                }
                let text = decode_segment(&rest[..end]).ok()?;
                tokens.extend(text.bytes().map(Token::Byte));
                last_was_param = false;
                rest = &rest[end..];
            }
        }
        Some(Self(tokens))
    }

    /// Whether `actual` (one decoded request segment) matches.
    pub fn matches(&self, actual: &str) -> bool {
        self.matches_counting(actual).0
    }

    /// [`Self::matches`] and the number of steps it took.
    fn matches_counting(&self, actual: &str) -> (bool, usize) {
        let (pattern, text) = (&self.0, actual.as_bytes());
        let (mut p, mut t, mut steps) = (0, 0, 0);
        // Where to resume after a mismatch: just past the last `AnyRun`,
        // with that run grown by one byte.
        let mut resume: Option<(usize, usize)> = None;
        loop {
            steps += 1;
            match pattern.get(p) {
                Some(Token::AnyRun) => {
                    resume = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                Some(Token::AnyOne) if t < text.len() => {
                    (p, t) = (p + 1, t + 1);
                    continue;
                }
                Some(Token::Byte(b)) if text.get(t) == Some(b) => {
                    (p, t) = (p + 1, t + 1);
                    continue;
                }
                None if t == text.len() => return (true, steps),
                _ => {}
            }
            match resume {
                Some((after_run, run_end)) if run_end < text.len() => {
                    resume = Some((after_run, run_end + 1));
                    (p, t) = (after_run, run_end + 1);
                }
                _ => return (false, steps),
            }
        }
    }

    /// A text both segments match, if there is one: a breadth-first search
    /// over pairs of positions in the two patterns (their product
    /// automaton), trying each byte either pattern names plus one neither
    /// does. At most (|a| + 1) x (|b| + 1) states.
    pub fn common_text(&self, other: &Segment) -> Option<String> {
        let (a, b) = (&self.0, &other.0);
        let named: Vec<u8> = {
            let mut bytes: Vec<u8> = a
                .iter()
                .chain(b)
                .filter_map(|t| match t {
                    Token::Byte(b) => Some(*b),
                    _ => None,
                })
                .collect();
            bytes.sort_unstable();
            bytes.dedup();
            bytes
        };
        let unnamed = b"xyzqjkvw0123456789abcdefghilmnoprstu"
            .iter()
            .copied()
            .find(|c| !named.contains(c));
        let alphabet: Vec<u8> = named.iter().copied().chain(unnamed).collect();

        let width = b.len() + 1;
        let index = |i: usize, j: usize| i * width + j;
        // For each state reached: the state before it and the byte read
        // (`None` for a skipped empty run).
        let mut came_from: Vec<Option<(usize, Option<u8>)>> = vec![None; (a.len() + 1) * width];
        let start = index(0, 0);
        came_from[start] = Some((start, None));
        let mut queue = VecDeque::from([(0, 0)]);
        while let Some((i, j)) = queue.pop_front() {
            let here = index(i, j);
            if i == a.len() && j == b.len() {
                return Some(Self::path_to(&came_from, start, here));
            }
            let mut next = Vec::new();
            if a.get(i) == Some(&Token::AnyRun) {
                next.push((i + 1, j, None));
            }
            if b.get(j) == Some(&Token::AnyRun) {
                next.push((i, j + 1, None));
            }
            for &c in &alphabet {
                if let (Some(i2), Some(j2)) = (step(a, i, c), step(b, j, c)) {
                    next.push((i2, j2, Some(c)));
                }
            }
            for (i2, j2, read) in next {
                let there = index(i2, j2);
                if came_from[there].is_none() {
                    came_from[there] = Some((here, read));
                    queue.push_back((i2, j2));
                }
            }
        }
        None
    }

    fn path_to(came_from: &[Option<(usize, Option<u8>)>], start: usize, end: usize) -> String {
        let mut bytes = Vec::new();
        let mut at = end;
        while at != start {
            let (before, read) = came_from[at].expect("every reached state has a parent");
            bytes.extend(read);
            at = before;
        }
        bytes.reverse();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The position after `pattern[at]` reads `c`, if it can.
fn step(pattern: &[Token], at: usize, c: u8) -> Option<usize> {
    match pattern.get(at)? {
        Token::Byte(b) if *b == c => Some(at + 1),
        Token::Byte(_) => None,
        Token::AnyOne => Some(at + 1),
        Token::AnyRun => Some(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn segment(text: &str) -> Segment {
        Segment::parse(text).unwrap()
    }

    /// The matcher keygate had before: tries every split, exponential in
    /// the number of parameters. Kept as the reference for what matches.
    fn backtracking(parts: &[Option<&str>], actual: &str) -> bool {
        match parts.split_first() {
            None => actual.is_empty(),
            Some((Some(text), rest)) => actual
                .strip_prefix(text)
                .is_some_and(|tail| backtracking(rest, tail)),
            Some((None, rest)) => (1..=actual.len())
                .filter(|&i| actual.is_char_boundary(i))
                .any(|i| backtracking(rest, &actual[i..])),
        }
    }

    #[test]
    fn matches_exactly_what_the_backtracking_matcher_matched() {
        let templates: [(&str, &[Option<&str>]); 5] = [
            ("{a}.json", &[None, Some(".json")]),
            ("{a}.{b}", &[None, Some("."), None]),
            ("v{n}-{m}x", &[Some("v"), None, Some("-"), None, Some("x")]),
            (
                "{a}.{b}.{c}.json",
                &[None, Some("."), None, Some("."), None, Some(".json")],
            ),
            ("items", &[Some("items")]),
        ];
        // Every text up to 5 characters over an alphabet that hits the
        // templates' text and a character they do not name.
        let alphabet = ['.', 'j', 's', 'o', 'n', 'v', '-', 'x', 'a'];
        let mut texts = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = texts
                .iter()
                .filter(|t| t.len() == texts.last().map_or(0, String::len))
                .flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}")))
                .collect();
            texts.extend(longer);
        }
        texts.extend(["a.json", "a.b.c.json", "v1-2x", "items", "é.json"].map(String::from));
        for (template, parts) in templates {
            let compiled = segment(template);
            for text in &texts {
                assert_eq!(
                    compiled.matches(text),
                    backtracking(parts, text),
                    "{template} against {text:?}"
                );
            }
        }
    }

    #[test]
    fn matching_is_bounded_by_pattern_times_text() {
        // 7.9 s with the backtracking matcher; here at most
        // (pattern + 1) x (text + 1) steps.
        let template = segment("{a}.{b}.{c}.json");
        let dots = ".".repeat(2_000);
        let (matched, steps) = template.matches_counting(&dots);
        assert!(!matched);
        let bound = (template.0.len() + 1) * (dots.len() + 1);
        assert!(steps <= bound, "{steps} steps, bound {bound}");
        let (matched, steps) = template.matches_counting(&format!("{dots}x.json"));
        assert!(matched);
        assert!(steps <= bound, "{steps} steps, bound {bound}");
    }

    #[rstest]
    #[case("items", "items", Some("items"))]
    #[case("items", "special", None)]
    #[case("{id}", "special", Some("special"))]
    #[case("{id}", "{name}.json", Some("x.json"))]
    #[case("{name}.json", "report.{ext}", Some("report.json"))]
    #[case("{name}.json", "{name}.xml", None)]
    #[case("v{n}", "{m}1", Some("v1"))]
    #[case("a{x}b", "b{y}a", None)]
    #[case("%73pecial", "special", Some("special"))]
    fn common_text_finds_a_witness_or_none(
        #[case] a: &str,
        #[case] b: &str,
        #[case] want: Option<&str>,
    ) {
        let found = segment(a).common_text(&segment(b));
        match want {
            // Any witness is fine as long as both match it; shortest first
            // makes these exact.
            Some(text) => {
                let found = found.unwrap_or_else(|| panic!("{a} and {b} overlap"));
                assert!(
                    segment(a).matches(&found) && segment(b).matches(&found),
                    "{found}"
                );
                assert_eq!(found.len(), text.len(), "{found} vs {text}");
            }
            None => assert_eq!(found, None, "{a} vs {b}"),
        }
    }

    #[rstest]
    #[case("{a}{b}")]
    #[case("{a")]
    #[case("a}")]
    #[case("{}")]
    #[case("a%2fb")]
    #[case("a%zz")]
    fn bad_segments_do_not_parse(#[case] text: &str) {
        assert_eq!(Segment::parse(text), None);
    }
}
