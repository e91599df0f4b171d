//! Order statistics for benchmark summaries.
//!
//! A figure that moves from one process to the next (the launch-overhead ratios do, by a
//! few percent) is summarised over many processes by its median and a confidence interval
//! of that median. The interval here is distribution-free: it rests on the count of
//! samples below the true median being Binomial(n, ½), so it assumes nothing about the
//! figure's spread.

/// The median of `samples` and a two-sided confidence interval for the population median
/// at level `level` (0.95 for 95%), from the order statistics: with the samples sorted,
/// the interval is `[x(k), x(n+1-k)]` (1-based), with `k` the largest index for which
/// `P(Binomial(n, ½) < k) ≤ (1 − level) / 2`.
///
/// `None` when there are no samples, a sample is NaN, `level` is not strictly between 0
/// and 1, or there are too few samples for that level (below 6 at 95%: even the smallest
/// and largest sample bound the median with less confidence than asked).
///
/// ```
/// use layerzero_benches::stats::median_interval;
///
/// let samples: Vec<f64> = (1..=30).map(f64::from).collect();
/// let summary = median_interval(&samples, 0.95).unwrap();
/// assert_eq!(summary.median, 15.5);
/// assert_eq!((summary.low, summary.high), (10.0, 21.0));
/// ```
pub fn median_interval(samples: &[f64], level: f64) -> Option<MedianInterval> {
    if samples.is_empty() || samples.iter().any(|s| s.is_nan()) || !(level > 0.0 && level < 1.0) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
    let tail = (1.0 - level) / 2.0;
    // P(B < k) for k = 1, 2, ...: the binomial's lower tail, summed term by term (each
    // term from the last by the ratio of binomial coefficients, in logs for large n).
    let log_half_n = -(n as f64) * std::f64::consts::LN_2;
    let mut log_term = log_half_n; // log P(B = 0)
    let mut below = 0.0; // P(B < k)
    let mut k = 0;
    for j in 0..n {
        below += log_term.exp(); // now P(B ≤ j) = P(B < j + 1)
        if below > tail {
            break;
        }
        k = j + 1;
        log_term += ((n - j) as f64).ln() - ((j + 1) as f64).ln();
    }
    if k == 0 || k > n / 2 {
        return None;
    }
    Some(MedianInterval { median, low: sorted[k - 1], high: sorted[n - k], n })
}

/// A median with its confidence interval (see [`median_interval`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MedianInterval {
    /// The samples' median (the mean of the middle two for an even count).
    pub median: f64,
    /// The interval's lower end: a sample.
    pub low: f64,
    /// The interval's upper end: a sample.
    pub high: f64,
    /// How many samples it was made from.
    pub n: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranks(n: usize) -> Vec<f64> {
        (1..=n).map(|i| i as f64).collect()
    }

    #[test]
    fn the_interval_is_the_binomial_order_statistics() {
        // k is where Binomial(n, ½)'s lower tail passes 2.5%: n = 6: P(B ≤ 0) = 1/64;
        // n = 10: P(B ≤ 1) = 11/1024, P(B ≤ 2) = 56/1024; n = 20: P(B ≤ 5) = 0.021,
        // P(B ≤ 6) = 0.058; n = 30: P(B ≤ 9) = 0.021, P(B ≤ 10) = 0.049; n = 100:
        // P(B ≤ 39) = 0.018, P(B ≤ 40) = 0.028.
        for (n, low, high) in [(6, 1.0, 6.0), (10, 2.0, 9.0), (20, 6.0, 15.0), (30, 10.0, 21.0), (100, 40.0, 61.0)] {
            let summary = median_interval(&ranks(n), 0.95).unwrap();
            assert_eq!((summary.low, summary.high, summary.n), (low, high, n), "n = {n}");
        }
    }

    #[test]
    fn the_median_of_an_odd_count_is_the_middle_sample_whatever_the_order() {
        let summary = median_interval(&[5.0, 1.0, 4.0, 2.0, 3.0, 7.0, 6.0], 0.95).unwrap();
        assert_eq!(summary.median, 4.0);
        assert_eq!((summary.low, summary.high), (1.0, 7.0));
    }

    #[test]
    fn a_wider_level_gives_a_wider_interval() {
        let samples = ranks(50);
        let narrow = median_interval(&samples, 0.80).unwrap();
        let wide = median_interval(&samples, 0.99).unwrap();
        assert!(wide.low < narrow.low && wide.high > narrow.high, "{narrow:?} {wide:?}");
    }

    #[test]
    fn too_few_samples_or_bad_input_give_none() {
        assert_eq!(median_interval(&ranks(5), 0.95), None);
        assert_eq!(median_interval(&[], 0.95), None);
        assert_eq!(median_interval(&[1.0, f64::NAN, 3.0, 4.0, 5.0, 6.0], 0.95), None);
        assert_eq!(median_interval(&ranks(30), 1.0), None);
        assert_eq!(median_interval(&ranks(30), 0.0), None);
        assert_eq!(median_interval(&ranks(30), f64::NAN), None);
    }
}
