//! Version order per ecosystem: crates where one exists (dpkg: `debversion`, PEP 440:
//! `pep440_rs`, npm: `semver`), hand-written where none is maintained (RPM's `rpmvercmp`,
//! apk's version rules), each following its tool's documented algorithm.

use std::cmp::Ordering;

use crate::inventory::Ecosystem;

/// `a` against `b` in `eco`'s order; `None` when either does not parse.
pub fn compare(eco: &Ecosystem, a: &str, b: &str) -> Option<Ordering> {
    match eco {
        Ecosystem::Debian(_) | Ecosystem::Ubuntu(_) => {
            let a: debversion::Version = a.parse().ok()?;
            let b: debversion::Version = b.parse().ok()?;
            Some(a.cmp(&b))
        }
        Ecosystem::Alpine(_) => Some(apk_cmp(a, b)),
        Ecosystem::Rpm(..) => Some(rpm_evr_cmp(a, b)),
        Ecosystem::Npm => {
            let a = semver::Version::parse(a.trim_start_matches('v')).ok()?;
            let b = semver::Version::parse(b.trim_start_matches('v')).ok()?;
            Some(a.cmp(&b))
        }
        Ecosystem::PyPI => {
            let a: pep440_rs::Version = a.parse().ok()?;
            let b: pep440_rs::Version = b.parse().ok()?;
            Some(a.cmp(&b))
        }
    }
}

/// RPM `[epoch:]version[-release]`: epoch numerically, then version and release with
/// `rpmvercmp`.
pub fn rpm_evr_cmp(a: &str, b: &str) -> Ordering {
    fn split(s: &str) -> (u64, &str, &str) {
        let (e, rest) = match s.split_once(':') {
            Some((e, r)) if e.bytes().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
            _ => (0, s),
        };
        match rest.rsplit_once('-') {
            Some((v, r)) => (e, v, r),
            None => (e, rest, ""),
        }
    }
    let (ea, va, ra) = split(a);
    let (eb, vb, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| rpmvercmp(va, vb))
        .then_with(|| rpmvercmp(ra, rb))
}

/// rpm's `rpmvercmp`: alternating digit and letter segments, separators ignored, `~` sorts
/// before everything (even the end), `^` after the end but before anything else, a numeric
/// segment is newer than a letter one.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    let sep = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    loop {
        while a.first().is_some_and(|c| sep(*c)) {
            a = &a[1..];
        }
        while b.first().is_some_and(|c| sep(*c)) {
            b = &b[1..];
        }
        match (a.first(), b.first()) {
            (Some(b'~'), Some(b'~')) => {
                a = &a[1..];
                b = &b[1..];
                continue;
            }
            (Some(b'~'), _) => return Ordering::Less,
            (_, Some(b'~')) => return Ordering::Greater,
            (Some(b'^'), Some(b'^')) => {
                a = &a[1..];
                b = &b[1..];
                continue;
            }
            (Some(b'^'), None) => return Ordering::Greater,
            (None, Some(b'^')) => return Ordering::Less,
            (Some(b'^'), _) => return Ordering::Less,
            (_, Some(b'^')) => return Ordering::Greater,
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            _ => {}
        }
        let numeric = a[0].is_ascii_digit();
        let take = |s: &[u8]| -> usize {
            s.iter()
                .take_while(|c| {
                    if numeric {
                        c.is_ascii_digit()
                    } else {
                        c.is_ascii_alphabetic()
                    }
                })
                .count()
        };
        let (na, nb) = (take(a), take(b));
        if nb == 0 {
            // Different kinds of segment: a number is newer than letters.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let (sa, sb) = (&a[..na], &b[..nb]);
        let ord = if numeric {
            let ta = trim_zeros(sa);
            let tb = trim_zeros(sb);
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
        } else {
            sa.cmp(sb)
        };
        if ord != Ordering::Equal {
            return ord;
        }
        a = &a[na..];
        b = &b[nb..];
    }
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|c| **c == b'0').count();
    &s[n..]
}

/// Alpine's apk versions: `N(.N)*[letter](_suffix[N])*[-rN]`, suffixes ordered `_alpha`,
/// `_beta`, `_pre`, `_rc`, (none), `_cvs`, `_svn`, `_git`, `_hg`, `_p`.
pub fn apk_cmp(a: &str, b: &str) -> Ordering {
    #[derive(PartialEq, Eq, PartialOrd, Ord, Debug)]
    enum Tok {
        Num(u64),
        Letter(u8),
        Suffix(i8, u64),
        Rel(u64),
    }
    fn suffix_rank(s: &str) -> i8 {
        match s {
            "alpha" => -4,
            "beta" => -3,
            "pre" => -2,
            "rc" => -1,
            "cvs" => 1,
            "svn" => 2,
            "git" => 3,
            "hg" => 4,
            "p" => 5,
            _ => 0,
        }
    }
    fn toks(v: &str) -> Vec<Tok> {
        let (main, rel) = match v.rsplit_once("-r") {
            Some((m, r)) if r.bytes().all(|c| c.is_ascii_digit()) => (m, r.parse().ok()),
            _ => (v, None),
        };
        let mut parts = main.split('_');
        let mut out = Vec::new();
        if let Some(nums) = parts.next() {
            for n in nums.split('.') {
                let digits: String = n.chars().take_while(char::is_ascii_digit).collect();
                out.push(Tok::Num(digits.parse().unwrap_or(0)));
                if let Some(l) = n[digits.len()..].bytes().next() {
                    out.push(Tok::Letter(l));
                }
            }
        }
        for s in parts {
            let name: String = s.chars().take_while(char::is_ascii_alphabetic).collect();
            let n = s[name.len()..].parse().unwrap_or(0);
            out.push(Tok::Suffix(suffix_rank(&name), n));
        }
        out.push(Tok::Rel(rel.unwrap_or(0)));
        out
    }
    let (ta, tb) = (toks(a), toks(b));
    for (x, y) in ta.iter().zip(tb.iter()) {
        let o = match (x, y) {
            (Tok::Num(p), Tok::Num(q)) => p.cmp(q),
            (Tok::Letter(p), Tok::Letter(q)) => p.cmp(q),
            (Tok::Suffix(p, m), Tok::Suffix(q, n)) => p.cmp(q).then(m.cmp(n)),
            (Tok::Rel(p), Tok::Rel(q)) => p.cmp(q),
            // A pre-release suffix ends a version earlier than anything else; more
            // components (a further number or a letter) are newer than a release number.
            (Tok::Suffix(r, _), _) => {
                if *r < 0 {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (_, Tok::Suffix(r, _)) => {
                if *r < 0 {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (Tok::Rel(_), _) => Ordering::Less,
            (_, Tok::Rel(_)) => Ordering::Greater,
            (Tok::Num(_), Tok::Letter(_)) => Ordering::Greater,
            (Tok::Letter(_), Tok::Num(_)) => Ordering::Less,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    ta.len().cmp(&tb.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn rpm_order_follows_rpmvercmp() {
        for (a, b, o) in [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0", Greater),
            ("1.0a", "1.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0^git1", "1.0", Greater),
            ("1.0^git1", "1.0.1", Less),
            ("1.010", "1.9", Greater),
            ("1.0.a", "1.0.1", Less),
            ("fc4", "fc.4", Equal),
        ] {
            assert_eq!(rpmvercmp(a, b), o, "{a} vs {b}");
        }
        assert_eq!(rpm_evr_cmp("1:1.0-1", "2.0-1"), Greater);
        assert_eq!(rpm_evr_cmp("3.0.7-24.el9", "3.0.7-25.el9"), Less);
    }

    #[test]
    fn apk_order_follows_alpine() {
        for (a, b, o) in [
            ("3.1.4-r0", "3.1.4-r1", Less),
            ("3.1.4-r5", "3.1.5-r0", Less),
            ("1.2.3_rc1-r0", "1.2.3-r0", Less),
            ("1.2.3_p1-r0", "1.2.3-r0", Greater),
            ("1.2.3a-r0", "1.2.3-r0", Greater),
            ("1.36.1-r15", "1.36.1-r15", Equal),
            ("1.10-r0", "1.9-r0", Greater),
        ] {
            assert_eq!(apk_cmp(a, b), o, "{a} vs {b}");
        }
    }

    #[test]
    fn crates_order_debian_pypi_and_npm() {
        let deb = Ecosystem::Debian("12".into());
        assert_eq!(compare(&deb, "3.0.11-1~deb12u1", "3.0.11-1"), Some(Less));
        assert_eq!(compare(&deb, "1:1.0", "2.0"), Some(Greater));
        assert_eq!(compare(&Ecosystem::PyPI, "2.0.0rc1", "2.0.0"), Some(Less));
        assert_eq!(compare(&Ecosystem::Npm, "4.17.20", "4.17.21"), Some(Less));
        assert_eq!(compare(&Ecosystem::Npm, "x", "1.0.0"), None);
    }
}
