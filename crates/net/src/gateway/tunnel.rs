//! The DNS-tunnelling heuristic: names that look like data smuggled through DNS are flagged
//! on their record (`dns-tunnelling-suspect`) for the detector.

/// Shannon entropy, in bits per character.
fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Flags a name that looks like data smuggled through DNS: very long, a very long label, or a
/// long label of high entropy.
pub fn tunnelling_suspect(name: &str) -> bool {
    let n = name.trim_end_matches('.');
    n.len() > 120
        || n.split('.')
            .any(|l| l.len() > 52 || (l.len() >= 24 && entropy(l) > 3.8))
}
