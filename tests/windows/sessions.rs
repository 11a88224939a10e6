//! Session merging in any arrival order equals the brute-force grouping.

use proptest::prelude::*;
use tideline::prelude::*;
use tideline::testing::TestJob;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn session_merging_matches_brute_force(mut ts in prop::collection::vec(-500i64..500, 1..40), gap in 1i64..60) {
        let t = TestJob::new();
        let (input, stream) = t.push_source::<i64>(WatermarkStrategy::none().with_timestamps(|t: &i64| *t));
        let out = t.collect(
            &stream.key_by(|_| 0u8).window(Session::with_gap(tideline::window::Span::millis(gap))).aggregate(Count),
        );
        let mut run = t.start().map_err(|e| TestCaseError::fail(e.to_string()))?;
        for v in &ts {
            input.send(*v).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        run.step().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(out.is_empty(), "no watermark yet, nothing fires");
        run.finish().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got: Vec<(i64, i64, u64)> = out.values().iter().map(|r| (r.window.start, r.window.end, r.value)).collect();

        ts.sort();
        let mut expected = Vec::new();
        let (mut first, mut last, mut n) = (ts[0], ts[0], 0u64);
        for t in ts {
            if t > last + gap {
                expected.push((first, last + gap, n));
                first = t;
                n = 0;
            }
            last = t;
            n += 1;
        }
        expected.push((first, last + gap, n));
        prop_assert_eq!(got, expected);
    }
}
