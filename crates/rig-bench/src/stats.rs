//! The arithmetic of the benchmark: percentiles of propagation samples,
//! latency summaries from HDR histograms, ratios between variants, and the
//! interleaved schedule that makes slow drift (a neighbour's build, thermal
//! throttling) land on every variant alike.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Nearest-rank percentile (`p` in 0..=100) of unsorted samples: the
/// smallest sample with at least p % of the samples at or below it.
pub fn percentile(samples: &[u64], p: f64) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p99 and max of a set of propagation times (ms).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Distribution {
    pub n: usize,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

impl Distribution {
    pub fn of(samples_ms: &[u64]) -> Option<Self> {
        Some(Self {
            n: samples_ms.len(),
            p50_ms: percentile(samples_ms, 50.0)?,
            p99_ms: percentile(samples_ms, 99.0)?,
            max_ms: *samples_ms.iter().max()?,
        })
    }
}

/// Latencies in microseconds, 3 significant digits, up to 60 s: the
/// load generator's own bounds.
pub use bench_peer::protocol::latency_histogram;

/// A variant's latency summary (µs) from its histogram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// `value / baseline`, `None` when the baseline is zero or absent.
pub fn ratio(value: f64, baseline: Option<f64>) -> Option<f64> {
    match baseline {
        Some(b) if b > 0.0 => Some(value / b),
        _ => None,
    }
}

/// The median over rounds of `value / baseline` taken within each round
/// (pairs with a zero on either side skipped); the mean of the middle two
/// for an even count. Paired by round, so a stretch of the run where the
/// whole machine was slower (another tenant, the host's steal) moves both
/// sides of a pair alike, and one such round cannot pull the result as it
/// pulls a ratio of totals.
pub fn median_of_ratios(pairs: impl IntoIterator<Item = (f64, f64)>) -> Option<f64> {
    let mut ratios: Vec<f64> = pairs
        .into_iter()
        .filter(|(value, baseline)| *value > 0.0 && *baseline > 0.0)
        .map(|(value, baseline)| value / baseline)
        .collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    let mid = ratios.len() / 2;
    Some(if ratios.len() % 2 == 1 {
        ratios[mid]
    } else {
        (ratios[mid - 1] + ratios[mid]) / 2.0
    })
}

/// Where the median of the population behind some samples lies, from the
/// samples' order statistics alone (no assumption about their
/// distribution): between the k-th smallest and the k-th largest sample,
/// with `confidence` the chance that holds (each sample falls either side
/// of the true median with probability 1/2, so the count below it is
/// Binomial(n, 1/2)).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MedianInterval {
    pub low: f64,
    pub high: f64,
    pub confidence: f64,
}

/// The narrowest such interval with at least 90 % confidence; with too few
/// samples for that (under 5), the widest one (smallest to largest) and
/// the confidence it has. `None` without samples. Used on the per-round
/// ratios, so a reader sees how far eight rounds pin the ratio down.
pub fn median_interval(samples: &[f64]) -> Option<MedianInterval> {
    const WANTED: f64 = 0.90;
    let n = samples.len();
    if n == 0 || n > 1000 {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    // P(B <= i) for B ~ Binomial(n, 1/2), i = 0..n.
    let mut below = Vec::with_capacity(n + 1);
    let mut p = 0.5f64.powi(n as i32);
    let mut sum = 0.0;
    for i in 0..=n {
        sum += p;
        below.push(sum);
        p *= (n - i) as f64 / (i + 1) as f64;
    }
    // Between the k-th smallest and k-th largest (k from 1): the median is
    // outside when k-1 or fewer samples fall below it, or above it.
    let confidence = |k: usize| 1.0 - 2.0 * below[k - 1];
    let k = (1..=n.div_ceil(2))
        .rev()
        .find(|&k| confidence(k) >= WANTED)
        .unwrap_or(1);
    Some(MedianInterval {
        low: sorted[k - 1],
        high: sorted[n - k],
        confidence: confidence(k).max(0.0),
    })
}

/// The order in which variants run: `rounds` rounds, each running every
/// variant once, so a variant's samples are spread over the whole run
/// instead of bunched at its start or end. Round `r` starts at variant `r`
/// and steps through them by a stride coprime to their count (1, 2, 3, ...
/// in turn), so the variant just before another changes from round to
/// round: with 7 variants, 6 rounds put each variant after each other one
/// exactly once. One fixed order (A B C A B C ...) ran the module's warm
/// variant right after keygate's cold one in every round, into whatever
/// Vault and keygate were still finishing.
pub fn interleave<T: Copy>(variants: &[T], rounds: usize) -> Vec<(usize, T)> {
    let n = variants.len();
    if n == 0 {
        return Vec::new();
    }
    let strides: Vec<usize> = (1..n.max(2)).filter(|&k| gcd(k, n) == 1).collect();
    (0..rounds)
        .flat_map(|round| {
            let stride = strides[round % strides.len()];
            (0..n).map(move |i| (round, variants[(round + i * stride) % n]))
        })
        .collect()
}

/// [`interleave`], with the variants of `block` back to back in every
/// round: the others and the block (as one slot) are interleaved, and the
/// block's own order turns from round to round (each rotation, then each
/// reversed), so no member always goes first or follows the same variant.
///
/// Why: the variants a target compares (the module against the native
/// filter) were up to seven turns (~23 s) apart in a round, and on a shared
/// VM the machine's speed drifts over that (the host's steal, neighbours),
/// so one round's ratio ranged 0.68-1.27. Back to back they see the same
/// machine, and the per-round ratio measures the filters, not the drift.
/// Members of `block` missing from `variants` are ignored.
pub fn interleave_paired<T: Copy + PartialEq>(
    variants: &[T],
    block: &[T],
    rounds: usize,
) -> Vec<(usize, T)> {
    let block: Vec<T> = block
        .iter()
        .copied()
        .filter(|b| variants.contains(b))
        .collect();
    if block.is_empty() {
        return interleave(variants, rounds);
    }
    // `None` is the block's slot.
    let mut slots: Vec<Option<T>> = variants
        .iter()
        .copied()
        .filter(|v| !block.contains(v))
        .map(Some)
        .collect();
    slots.insert(0, None);
    let k = block.len();
    interleave(&slots, rounds)
        .into_iter()
        .flat_map(|(round, slot)| match slot {
            Some(v) => vec![(round, v)],
            None => {
                let start = round % k;
                let mut order: Vec<T> = (0..k).map(|i| block[(start + i) % k]).collect();
                if (round / k) % 2 == 1 {
                    order.reverse();
                }
                order.into_iter().map(|v| (round, v)).collect()
            }
        })
        .collect()
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_per_round_ratios_resists_one_bad_round() {
        // Four rounds at 0.95, one where the module's turn was starved.
        let pairs = [
            (95.0, 100.0),
            (190.0, 200.0),
            (30.0, 100.0),
            (95.0, 100.0),
            (95.0, 100.0),
        ];
        assert_eq!(median_of_ratios(pairs), Some(0.95));
        assert_eq!(median_of_ratios([(1.0, 2.0), (3.0, 2.0)]), Some(1.0));
        assert_eq!(median_of_ratios([(1.0, 0.0), (0.0, 1.0)]), None);
        assert_eq!(median_of_ratios([]), None);
    }

    #[test]
    fn the_medians_interval_comes_from_order_statistics() {
        // Eight rounds: the 2nd smallest to the 2nd largest, 1 - 2 * 9/256.
        let eight = [1.11, 0.95, 0.89, 0.93, 1.02, 0.91, 1.06, 0.98];
        let i = median_interval(&eight).unwrap();
        assert_eq!((i.low, i.high), (0.91, 1.06));
        assert!((i.confidence - (1.0 - 18.0 / 256.0)).abs() < 1e-12, "{i:?}");
        // Twenty: the 6th from each end, 95.9 %.
        let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        let i = median_interval(&twenty).unwrap();
        assert_eq!((i.low, i.high), (6.0, 15.0));
        assert!((i.confidence - 0.9586).abs() < 1e-4, "{i:?}");
        // Three rounds cannot reach 90 %: smallest to largest, 75 %.
        let i = median_interval(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((i.low, i.high, i.confidence), (1.0, 3.0, 0.75));
        let i = median_interval(&[2.0]).unwrap();
        assert_eq!((i.low, i.high, i.confidence), (2.0, 2.0, 0.0));
        assert_eq!(median_interval(&[]), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&samples, 50.0), Some(50));
        assert_eq!(percentile(&samples, 99.0), Some(99));
        assert_eq!(percentile(&samples, 100.0), Some(100));
        assert_eq!(percentile(&samples, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        // 20 events: p99 is the largest, p50 the 10th.
        let twenty: Vec<u64> = (1..=20).map(|n| n * 10).collect();
        assert_eq!(percentile(&twenty, 99.0), Some(200));
        assert_eq!(percentile(&twenty, 50.0), Some(100));
    }

    #[test]
    fn distribution_of_samples() {
        let d = Distribution::of(&[300, 100, 200, 900]).unwrap();
        assert_eq!(
            d,
            Distribution {
                n: 4,
                p50_ms: 200,
                p99_ms: 900,
                max_ms: 900
            }
        );
        assert!(Distribution::of(&[]).is_none());
    }

    #[test]
    fn histogram_summary() {
        let mut h = latency_histogram();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let l = Latency::of(&h);
        assert_eq!(l.p50_us, 500);
        assert_eq!(l.p99_us, 990);
        assert_eq!(l.p999_us, 999);
        assert_eq!(l.max_us, 1000);
    }

    #[test]
    fn ratios_need_a_positive_baseline() {
        assert_eq!(ratio(800.0, Some(1000.0)), Some(0.8));
        assert_eq!(ratio(800.0, Some(0.0)), None);
        assert_eq!(ratio(800.0, None), None);
    }

    #[test]
    fn paired_interleaving_keeps_the_block_together_and_turns_its_order() {
        let variants = ['A', 'N', 'B', 'M', 'C', 'P'];
        let block = ['N', 'P', 'M'];
        let schedule = interleave_paired(&variants, &block, 6);
        let mut orders = std::collections::BTreeSet::new();
        let mut block_starts = std::collections::BTreeSet::new();
        for round in 0..6 {
            let order: String = schedule
                .iter()
                .filter(|(r, _)| *r == round)
                .map(|(_, v)| *v)
                .collect();
            // Every variant once per round.
            let mut sorted: Vec<char> = order.chars().collect();
            sorted.sort_unstable();
            assert_eq!(
                sorted,
                ['A', 'B', 'C', 'M', 'N', 'P'],
                "round {round}: {order}"
            );
            // The block's three back to back.
            let at = order.find(|c| block.contains(&c)).expect("the block runs");
            let run = &order[at..at + 3];
            assert!(
                run.chars().all(|c| block.contains(&c)),
                "round {round}: {order}"
            );
            orders.insert(run.to_owned());
            block_starts.insert(at);
        }
        // Six rounds: each of the block's six orders once.
        assert_eq!(orders.len(), 6, "{orders:?}");
        // And the block does not sit at one place in the round.
        assert!(block_starts.len() > 1, "{block_starts:?}");
        // Members not among the variants are left out; no block: interleave.
        assert_eq!(
            interleave_paired(&['A', 'B'], &['Z'], 2),
            interleave(&['A', 'B'], 2)
        );
        let partial: String = interleave_paired(&['A', 'N', 'B'], &['N', 'Z'], 1)
            .iter()
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(partial, "NAB");
    }

    #[test]
    fn interleaving_runs_each_variant_once_per_round() {
        let schedule = interleave(&['A', 'B', 'C'], 3);
        let order: String = schedule.iter().map(|(_, v)| *v).collect();
        // Strides 1, 2, 1 (2 is coprime to 3), starting at A, B, C.
        assert_eq!(order, "ABCBACCAB");
        assert_eq!(
            schedule.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
            [0, 0, 0, 1, 1, 1, 2, 2, 2]
        );
        assert!(interleave::<char>(&[], 3).is_empty());
        assert_eq!(interleave(&['A'], 2), [(0, 'A'), (1, 'A')]);
        for n in 1..=9 {
            let variants: Vec<usize> = (0..n).collect();
            for (round, chunk) in interleave(&variants, 8).chunks(n).enumerate() {
                let mut seen: Vec<usize> = chunk.iter().map(|(_, v)| *v).collect();
                seen.sort_unstable();
                assert_eq!(seen, variants, "{n} variants, round {round}");
            }
        }
    }

    #[test]
    fn with_seven_variants_each_follows_each_other_once_in_six_rounds() {
        let variants: Vec<usize> = (0..7).collect();
        let schedule = interleave(&variants, 6);
        let mut after = std::collections::BTreeMap::new();
        for round in schedule.chunks(7) {
            for pair in round.windows(2) {
                *after.entry((pair[0].1, pair[1].1)).or_insert(0) += 1;
            }
        }
        // 6 rounds x 6 neighbours: 36 ordered pairs, each once.
        assert_eq!(after.len(), 36);
        assert!(after.values().all(|&count| count == 1), "{after:?}");
    }
}
