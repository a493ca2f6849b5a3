//! The latency histogram as an HdrHistogram percentile distribution
//! (`.hgrm`), in the layout wrk2 prints under "Detailed Percentile spectrum"
//! and HdrHistogram's plotter (`plotFiles.html`) and hdr-plot read.
//!
//! The hdrhistogram crate can serialise histograms (V2, interval logs) but
//! not this text form, so it is written here from the crate's own quantile
//! iterator, which walks the same points as the Java/C
//! `outputPercentileDistribution` (5 ticks per half distance).
//!
//! Values are milliseconds, the unit wrk2 writes and the plotter assumes,
//! with 6 decimals so that nanosecond-range loopback latencies keep their
//! three significant figures. Plotters read only the lines with four
//! numeric columns; the header, the `inf` last line and the `#[...]`
//! footer are for people.

use std::io::{self, Write};

use hdrhistogram::Histogram;

/// Reporting points per halving of the distance to 100% (HdrHistogram's default).
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Nanoseconds per millisecond: the histogram records nanoseconds.
const NS_PER_MS: f64 = 1e6;

/// Writes `histogram` (nanoseconds) as a percentile distribution.
pub fn write(histogram: &Histogram<u64>, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "  Detailed Percentile spectrum:")?;
    writeln!(out, "{:>12} {:>14} {:>10} {:>14}", "Value", "Percentile", "TotalCount", "1/(1-Percentile)")?;
    writeln!(out)?;
    let mut total = 0u64;
    // (The iterator needs at least one recorded value.)
    let steps = (!histogram.is_empty()).then(|| histogram.iter_quantiles(TICKS_PER_HALF_DISTANCE));
    for step in steps.into_iter().flatten() {
        total += step.count_since_last_iteration();
        let value = step.value_iterated_to() as f64 / NS_PER_MS;
        let quantile = step.quantile_iterated_to();
        if quantile < 1.0 {
            writeln!(out, "{value:>12.6} {quantile:>14.12} {total:>10} {:>14.2}", 1.0 / (1.0 - quantile))?;
        } else {
            writeln!(out, "{value:>12.6} {quantile:>14.12} {total:>10} {:>14}", "inf")?;
        }
    }
    let (mean, stdev, max) = if histogram.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (histogram.mean() / NS_PER_MS, histogram.stdev() / NS_PER_MS, histogram.max() as f64 / NS_PER_MS)
    };
    writeln!(out, "#[Mean    = {mean:>12.6}, StdDeviation   = {stdev:>12.6}]")?;
    writeln!(out, "#[Max     = {max:>12.6}, Total count    = {:>12}]", histogram.len())?;
    writeln!(out, "#[Buckets = {:>12}, SubBuckets     = {:>12}]", histogram.buckets(), sub_buckets(histogram))?;
    Ok(())
}

/// Sub-buckets per bucket, as HdrHistogram defines them: the power of two
/// that holds `2 × 10^sigfig` (the crate does not expose it).
fn sub_buckets(histogram: &Histogram<u64>) -> u64 {
    let single_unit_resolution = 2 * 10u64.pow(u32::from(histogram.sigfig()));
    single_unit_resolution.next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::latency_histogram;

    /// The rows a plotter uses: lines with four numbers.
    fn rows(text: &str) -> Vec<(f64, f64, u64, f64)> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.len() != 4 {
                    return None;
                }
                Some((
                    fields[0].parse().ok()?,
                    fields[1].parse().ok()?,
                    fields[2].parse().ok()?,
                    fields[3].parse().ok()?,
                ))
            })
            .collect()
    }

    #[test]
    fn percentile_spectrum_is_monotonic_and_complete() {
        let mut h = latency_histogram();
        for i in 1..=10_000u64 {
            h.record(i * 1_000).unwrap(); // 1 us .. 10 ms
        }
        let mut text = Vec::new();
        write(&h, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        let rows = rows(&text);
        assert!(rows.len() > 50, "{text}");
        assert!(rows.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1 && w[0].2 <= w[1].2));
        let last = text.lines().rev().find(|l| !l.starts_with('#')).unwrap();
        assert!(last.ends_with("inf"), "{last}");
        assert!(last.contains(" 10000 "));
        let median = rows.iter().find(|r| r.1 >= 0.5).unwrap();
        assert!((median.0 - 5.0).abs() < 0.01, "median {} ms", median.0);
        assert!(text.contains("#[Buckets = "));
        assert!(text.contains("SubBuckets     =         2048]"));
    }

    #[test]
    fn empty_histogram_writes_only_header_and_footer() {
        let mut text = Vec::new();
        write(&latency_histogram(), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(rows(&text).is_empty());
        assert!(text.contains("Total count    =            0]"));
    }
}
