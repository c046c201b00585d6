//! Latency summaries.

/// Summary of one set of round-trip times.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub p50_ns: f64,
    pub p99_ns: f64,
    pub mean_ns: f64,
    pub min_ns: f64,
    pub max_ns: f64,
}

/// Nearest-rank percentile of sorted samples, `p` in (0, 100].
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// Summarises samples in nanoseconds (sorts them in place).
pub fn summarize(samples: &mut [u64]) -> Summary {
    samples.sort_unstable();
    let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
    Summary {
        p50_ns: percentile(samples, 50.0),
        p99_ns: percentile(samples, 99.0),
        mean_ns: if samples.is_empty() {
            f64::NAN
        } else {
            sum as f64 / samples.len() as f64
        },
        min_ns: samples.first().map_or(f64::NAN, |&v| v as f64),
        max_ns: samples.last().map_or(f64::NAN, |&v| v as f64),
    }
}

/// Median of a few values (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_median() {
        let mut s: Vec<u64> = (1..=100).collect();
        let sum = summarize(&mut s);
        assert_eq!(sum.p50_ns, 50.0);
        assert_eq!(sum.p99_ns, 99.0);
        assert_eq!(sum.min_ns, 1.0);
        assert_eq!(sum.mean_ns, 50.5);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
