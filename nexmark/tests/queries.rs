//! Every query's output on a small generated input equals a brute-force
//! reference computed here from the events, at parallelism 1, 2 and 3.

#![allow(clippy::expect_used)]
use std::collections::{BTreeMap, BTreeSet, HashMap};

use tideline::prelude::*;
use tideline::Data;
use tideline_nexmark::queries::{self, BidderSession, HighestBid, HotItem, NewUser, SellerAuction};
use tideline_nexmark::{Auction, Bid, Event, NexmarkConfig, NexmarkSource, Person};

const TEN_S: i64 = 10_000;
const TWO_S: i64 = 2_000;

/// 40,000 events at 500 per event-time second: 80 s, eight 10 s windows.
fn events() -> Vec<Event> {
    let config = NexmarkConfig {
        events_per_second: 500,
        ..NexmarkConfig::default()
    };
    config.generate(40_000).expect("valid config")
}

/// Runs `query` over `events` at `parallelism` and returns its sorted output.
fn run<T: Data + Ord>(
    events: &[Event],
    parallelism: usize,
    query: impl Fn(&Stream<Event>) -> Stream<T>,
) -> Vec<T> {
    let job = Job::new()
        .parallelism(parallelism)
        .mode(ExecutionMode::Bounded);
    let stream = job.source(
        NexmarkSource::replay(events.to_vec()).with_partitions(parallelism),
        WatermarkStrategy::monotonous(),
    );
    let out = CollectSink::new();
    query(&stream).sink(out.clone());
    job.run().expect("job runs");
    let mut values = out.values();
    values.sort();
    values
}

/// Checks `query` against `expected` at parallelism 1, 2 and 3.
fn check<T: Data + Ord + std::fmt::Debug>(
    events: &[Event],
    query: impl Fn(&Stream<Event>) -> Stream<T> + Copy,
    mut expected: Vec<T>,
) {
    expected.sort();
    assert!(!expected.is_empty(), "the reference output is empty");
    for parallelism in [1, 2, 3] {
        let got = run(events, parallelism, query);
        assert_eq!(got.len(), expected.len(), "parallelism {parallelism}");
        assert!(
            got == expected,
            "output differs at parallelism {parallelism}"
        );
    }
}

fn all_bids(events: &[Event]) -> Vec<&Bid> {
    events.iter().filter_map(Event::as_bid).collect()
}

fn window_start(ts: i64, size: i64) -> i64 {
    ts - ts.rem_euclid(size)
}

/// The starts of the sliding 10 s / 2 s windows holding `ts`.
fn sliding_starts(ts: i64) -> impl Iterator<Item = i64> {
    let last = window_start(ts, TWO_S);
    (0..TEN_S / TWO_S).map(move |i| last - i * TWO_S)
}

#[test]
fn q0_passes_every_bid_through() {
    let events = events();
    let expected: Vec<Bid> = all_bids(&events).into_iter().cloned().collect();
    assert_eq!(expected.len(), 40_000 * 46 / 50);
    check(&events, queries::q0, expected);
}

#[test]
fn q0_keeps_a_partitions_order() {
    let events = events();
    let job = Job::new().mode(ExecutionMode::Bounded);
    let out = CollectSink::new();
    queries::q0(&job.source(
        NexmarkSource::replay(events.clone()),
        WatermarkStrategy::monotonous(),
    ))
    .sink(out.clone());
    job.run().expect("job runs");
    let expected: Vec<Bid> = all_bids(&events).into_iter().cloned().collect();
    assert!(out.values() == expected);
}

#[test]
fn q1_converts_prices() {
    let events = events();
    let expected = all_bids(&events)
        .into_iter()
        .map(|b| Bid {
            price: b.price * 908 / 1000,
            ..b.clone()
        })
        .collect();
    check(&events, queries::q1, expected);
}

#[test]
fn q2_selects_auctions_divisible_by_123() {
    let events = events();
    let expected = all_bids(&events)
        .into_iter()
        .filter(|b| b.auction % 123 == 0)
        .map(|b| (b.auction, b.price))
        .collect();
    check(&events, queries::q2, expected);
}

#[test]
fn q3_joins_sellers_with_their_auctions() {
    let events = events();
    let sellers: HashMap<u64, &Person> = events
        .iter()
        .filter_map(Event::as_person)
        .filter(|p| ["or", "id", "ca"].contains(&p.state()))
        .map(|p| (p.id, p))
        .collect();
    let expected: Vec<SellerAuction> = events
        .iter()
        .filter_map(Event::as_auction)
        .filter(|a| a.category == 10)
        .filter_map(|a| {
            sellers.get(&a.seller).map(|p| SellerAuction {
                name: p.name().into(),
                city: p.city().into(),
                state: p.state().into(),
                auction: a.id,
            })
        })
        .collect();
    // Some auctions arrive before their seller and must wait for them.
    let early = events
        .iter()
        .filter_map(Event::as_auction)
        .filter(|a| {
            a.category == 10
                && sellers
                    .get(&a.seller)
                    .is_some_and(|p| p.date_time > a.date_time)
        })
        .count();
    assert!(early > 0, "the input exercises no waiting auction");
    check(&events, queries::q3, expected);
}

#[test]
fn q5_finds_the_hottest_auctions_per_sliding_window() {
    let events = events();
    let mut counts: BTreeMap<i64, HashMap<u64, u64>> = BTreeMap::new();
    for b in all_bids(&events) {
        for start in sliding_starts(b.date_time) {
            *counts
                .entry(start)
                .or_default()
                .entry(b.auction)
                .or_default() += 1;
        }
    }
    let mut expected = Vec::new();
    for (start, per_auction) in counts {
        let max = per_auction.values().copied().max().unwrap_or(0);
        for (&auction, &bids) in &per_auction {
            if bids == max {
                expected.push(HotItem {
                    window_end: start + TEN_S,
                    auction,
                    bids,
                });
            }
        }
    }
    check(&events, queries::q5, expected);
}

#[test]
fn q7_finds_the_highest_bids_per_window() {
    let events = events();
    let mut best: BTreeMap<i64, Vec<&Bid>> = BTreeMap::new();
    for b in all_bids(&events) {
        let top = best.entry(window_start(b.date_time, TEN_S)).or_default();
        match top.first().map(|t| t.price) {
            Some(p) if b.price < p => {}
            Some(p) if b.price == p => top.push(b),
            _ => *top = vec![b],
        }
    }
    let expected = best
        .into_iter()
        .flat_map(|(start, bids)| {
            bids.into_iter().map(move |b| HighestBid {
                window_end: start + TEN_S,
                bid: b.clone(),
            })
        })
        .collect();
    check(&events, queries::q7, expected);
}

#[test]
fn q8_finds_persons_who_sell_in_their_first_window() {
    let events = events();
    let sold: BTreeSet<(u64, i64)> = events
        .iter()
        .filter_map(Event::as_auction)
        .map(|a: &Auction| (a.seller, window_start(a.date_time, TEN_S)))
        .collect();
    let expected = events
        .iter()
        .filter_map(Event::as_person)
        .map(|p| (p, window_start(p.date_time, TEN_S)))
        .filter(|(p, start)| sold.contains(&(p.id, *start)))
        .map(|(p, start)| NewUser {
            id: p.id,
            name: p.name().into(),
            window_start: start,
        })
        .collect();
    check(&events, queries::q8, expected);
}

#[test]
fn q11_counts_bids_per_bidder_session() {
    let events = events();
    let mut per_bidder: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for b in all_bids(&events) {
        per_bidder.entry(b.bidder).or_default().push(b.date_time);
    }
    let mut expected = Vec::new();
    for (bidder, mut times) in per_bidder {
        times.sort_unstable();
        let mut session = BidderSession {
            bidder,
            bids: 0,
            start: times[0],
            end: times[0] + TEN_S,
        };
        for t in times {
            // Sessions that touch merge (Flink's rule).
            if t > session.end {
                expected.push(session.clone());
                session = BidderSession {
                    bidder,
                    bids: 0,
                    start: t,
                    end: t,
                };
            }
            session.bids += 1;
            session.end = t + TEN_S;
        }
        expected.push(session);
    }
    check(&events, queries::q11, expected);
}

#[test]
fn w1_counts_and_sums_per_auction_and_window() {
    let events = events();
    let mut acc: BTreeMap<(u64, i64), (u64, u64)> = BTreeMap::new();
    for b in all_bids(&events) {
        let e = acc
            .entry((b.auction, window_start(b.date_time, TEN_S)))
            .or_default();
        e.0 += 1;
        e.1 += b.price;
    }
    let expected = acc
        .into_iter()
        .map(|((auction, start), v)| (auction, start, v))
        .collect();
    check(
        &events,
        |s| queries::w1(s).map(|r| (r.key, r.window.start, r.value)),
        expected,
    );
}

#[test]
fn w2_counts_per_auction_and_sliding_window() {
    let events = events();
    let mut acc: BTreeMap<(u64, i64), u64> = BTreeMap::new();
    for b in all_bids(&events) {
        for start in sliding_starts(b.date_time) {
            *acc.entry((b.auction, start)).or_default() += 1;
        }
    }
    let expected = acc
        .into_iter()
        .map(|((auction, start), n)| (auction, start, n))
        .collect();
    check(
        &events,
        |s| queries::w2(s).map(|r| (r.key, r.window.start, r.value)),
        expected,
    );
}
