//! The numbers: minimum and median of repeated runs, ratios to the unmonitored run, and
//! the time a monitor adds per unit of work. Pure functions, so they are unit-tested.

/// Minimum and median of one (workload, condition) cell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub runs: usize,
    pub min: f64,
    pub median: f64,
}

/// `None` for no samples. NaN samples (none are produced, but a parse could) are ignored.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(Summary {
        runs: v.len(),
        min: v[0],
        median: median_sorted(&v),
    })
}

/// The median of a sorted, non-empty slice (the mean of the two middle values when even).
fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median of unsorted samples; `None` when empty.
pub fn median(samples: &[f64]) -> Option<f64> {
    summarize(samples).map(|s| s.median)
}

/// `value / base`; `None` when the base is not a positive time.
pub fn ratio(value: f64, base: f64) -> Option<f64> {
    (base > 0.0 && value.is_finite()).then(|| value / base)
}

/// Microseconds added per unit of work: `(value - base) / ops`, in µs (negative when the
/// monitored run was faster, which is noise).
pub fn added_us_per_op(value_s: f64, base_s: f64, ops: u64) -> Option<f64> {
    (ops > 0).then(|| (value_s - base_s) * 1e6 / ops as f64)
}

/// The fraction of one core used: CPU seconds over wall seconds.
pub fn core_fraction(cpu_s: f64, wall_s: f64) -> Option<f64> {
    (wall_s > 0.0).then(|| cpu_s / wall_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_and_median_of_odd_and_even_runs() {
        let s = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.runs, s.min, s.median), (3, 1.0, 2.0));
        let s = summarize(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median), (1.0, 2.5));
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[f64::NAN]), None);
        assert_eq!(median(&[5.0]), Some(5.0));
    }

    #[test]
    fn ratios_need_a_positive_base() {
        assert_eq!(ratio(1.1, 1.0), Some(1.1));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::INFINITY, 1.0), None);
    }

    #[test]
    fn added_time_per_op_in_microseconds() {
        // 300 starts took 0.3 s longer: 1 ms each.
        let us = added_us_per_op(4.8, 4.5, 300).unwrap();
        assert!((us - 1000.0).abs() < 1e-6);
        assert_eq!(added_us_per_op(1.0, 1.0, 0), None);
        assert!(added_us_per_op(0.9, 1.0, 10).unwrap() < 0.0);
    }

    #[test]
    fn core_fraction_is_cpu_over_wall() {
        assert_eq!(core_fraction(0.1, 10.0), Some(0.01));
        assert_eq!(core_fraction(1.0, 0.0), None);
    }
}
