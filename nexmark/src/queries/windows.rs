//! Windowed queries over bids: q5, q7, q11 and the workloads W1, W2.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tideline::prelude::*;
use tideline::window::WindowCollector;
use tideline::Output;

use super::bids;
use crate::event::{Bid, Event};

const TEN_SECONDS: Duration = Duration::from_secs(10);
/// [`TEN_SECONDS`] in milliseconds, for window arithmetic on timestamps.
const TEN_SECONDS_MS: i64 = 10_000;
const TWO_SECONDS: Duration = Duration::from_secs(2);

/// q5's result: one of the auctions with the most bids in a sliding window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HotItem {
    /// End of the 10 s window, epoch milliseconds (exclusive).
    pub window_end: i64,
    /// The auction.
    pub auction: u64,
    /// Its bids in the window (the window's maximum).
    pub bids: u64,
}

/// Keeps every item with the highest `rank` seen (ties are all kept).
struct MaxBy<T, F> {
    rank: F,
    _items: std::marker::PhantomData<fn(T) -> T>,
}

impl<T, F: Clone> Clone for MaxBy<T, F> {
    fn clone(&self) -> Self {
        Self {
            rank: self.rank.clone(),
            _items: std::marker::PhantomData,
        }
    }
}

fn max_by<T, F: Fn(&T) -> u64>(rank: F) -> MaxBy<T, F> {
    MaxBy {
        rank,
        _items: std::marker::PhantomData,
    }
}

impl<T, F> AggregateFunction<T> for MaxBy<T, F>
where
    T: tideline::Data + tideline::state::StateValue,
    F: Fn(&T) -> u64 + Clone + Send + Sync + 'static,
{
    type Acc = Vec<T>;
    type Out = Vec<T>;

    fn create(&self) -> Vec<T> {
        Vec::new()
    }

    fn add(&self, acc: &mut Vec<T>, value: T) {
        let rank = (self.rank)(&value);
        match acc.first().map(|top| (self.rank)(top)) {
            Some(top) if rank < top => {}
            Some(top) if rank == top => acc.push(value),
            _ => {
                acc.clear();
                acc.push(value);
            }
        }
    }

    fn merge(&self, acc: &mut Vec<T>, other: &Vec<T>) {
        for item in other {
            self.add(acc, item.clone());
        }
    }

    fn result(&self, acc: Vec<T>) -> Vec<T> {
        acc
    }
}

/// The auction of each bid: all that crosses the exchange when only bids
/// per auction are counted (a projection before the shuffle, as Flink's
/// planner pushes it down; the bid's text then never leaves its reader).
fn auction_of_each_bid(events: &Stream<Event>) -> Stream<u64> {
    events.flat_map(|e| match e {
        Event::Bid(b) => Some(b.auction),
        _ => None,
    })
}

/// q5, hot items: for each sliding window of 10 s (every 2 s), the auctions
/// with the most bids. Counts per auction and window run keyed by auction;
/// the maximum per window runs keyed by window end.
pub fn q5(events: &Stream<Event>) -> Stream<HotItem> {
    auction_of_each_bid(events)
        .key_by(|auction| *auction)
        .window(Sliding::of(TEN_SECONDS, TWO_SECONDS))
        .aggregate(Count)
        .map(|r| HotItem {
            window_end: r.window.end,
            auction: r.key,
            bids: r.value,
        })
        // A count arrives stamped with its window's last millisecond, so the
        // 2 s tumbling window around that stamp holds exactly the counts
        // of one sliding window.
        .key_by(|item| item.window_end)
        .window(Tumbling::of(TWO_SECONDS))
        .aggregate_with(
            max_by(|item: &HotItem| item.bids),
            |_: &i64,
             _: &WindowInfo,
             mut top: Vec<HotItem>,
             out: &mut WindowCollector<'_, HotItem>| {
                top.sort_unstable();
                for item in top {
                    out.collect(item);
                }
                Ok(())
            },
        )
}

/// q7's result: a bid with the highest price of its window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HighestBid {
    /// End of the tumbling 10 s window, epoch milliseconds (exclusive).
    pub window_end: i64,
    /// The bid.
    pub bid: Bid,
}

/// Drops, before the exchange, the bids that cannot be their window's
/// highest: those priced below the highest this subtask already saw in the
/// same window. Every dropped bid is beaten by a kept one, so the maxima
/// downstream do not change: this is the local half of a local-global
/// maximum (as Flink's planner splits `MAX`). It remembers the latest window
/// only (input is in event-time order; an older window's bid passes), and
/// starts empty after a restore, which only lets more bids through.
#[derive(Debug, Default)]
struct LocalMaxFilter {
    window: Option<(i64, u64)>,
}

impl Operator<Bid, Bid> for LocalMaxFilter {
    fn process_batch(&mut self, mut batch: Vec<Record<Bid>>, out: &mut Output<Bid>) -> Result<()> {
        batch.retain(|r| {
            let start = r.timestamp.millis().div_euclid(TEN_SECONDS_MS) * TEN_SECONDS_MS;
            let price = r.value.price;
            match &mut self.window {
                Some((window, max)) if *window == start => {
                    let keep = price >= *max;
                    *max = (*max).max(price);
                    keep
                }
                Some((window, _)) if *window > start => true,
                _ => {
                    self.window = Some((start, price));
                    true
                }
            }
        });
        out.push_batch(batch);
        Ok(())
    }
}

/// q7, highest bid: for each tumbling 10 s window, the bids with the
/// highest price. Bids below a price already seen in their window are
/// dropped where they are read; the maximum is then taken per auction (in
/// parallel), then per window over those.
pub fn q7(events: &Stream<Event>) -> Stream<HighestBid> {
    bids(events)
        .transform("q7_local_max", |_| Ok(LocalMaxFilter::default()))
        .key_by(|b| b.auction)
        .window(Tumbling::of(TEN_SECONDS))
        .aggregate(max_by(|b: &Bid| b.price))
        .flat_map(|r| r.value)
        // Each bid is re-stamped with its window's last millisecond; its own
        // date_time is in the same window, which keys the second stage.
        .key_by(|b| b.date_time.div_euclid(TEN_SECONDS_MS))
        .window(Tumbling::of(TEN_SECONDS))
        .aggregate_with(
            max_by(|b: &Bid| b.price),
            |_: &i64,
             info: &WindowInfo,
             mut top: Vec<Bid>,
             out: &mut WindowCollector<'_, HighestBid>| {
                top.sort_by_key(|b| (b.date_time, b.auction, b.bidder));
                for bid in top {
                    out.collect(HighestBid {
                        window_end: info.window.end,
                        bid,
                    });
                }
                Ok(())
            },
        )
}

/// q11's result: one bidder session.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BidderSession {
    /// The bidder.
    pub bidder: u64,
    /// Bids in the session.
    pub bids: u64,
    /// First bid's time, epoch milliseconds.
    pub start: i64,
    /// Last bid's time plus the 10 s gap, epoch milliseconds.
    pub end: i64,
}

/// q11, user sessions: bids per bidder session, a session ending after
/// 10 s without a bid from that bidder.
pub fn q11(events: &Stream<Event>) -> Stream<BidderSession> {
    // Only the bidder crosses the exchange (projection before the shuffle).
    bids(events)
        .map(|b| b.bidder)
        .key_by(|bidder| *bidder)
        .window(Session::with_gap(TEN_SECONDS))
        .aggregate_with(
            Count,
            |bidder: &u64,
             info: &WindowInfo,
             bids: u64,
             out: &mut WindowCollector<'_, BidderSession>| {
                out.collect(BidderSession {
                    bidder: *bidder,
                    bids,
                    start: info.window.start,
                    end: info.window.end,
                });
                Ok(())
            },
        )
}

/// W1: per auction and tumbling 10 s window, the number of bids and the sum
/// of their prices.
pub fn w1(events: &Stream<Event>) -> Stream<WindowResult<u64, (u64, u64)>> {
    // Only (auction, price) crosses the exchange.
    bids(events)
        .map(|b| (b.auction, b.price))
        .key_by(|(auction, _)| *auction)
        .window(Tumbling::of(TEN_SECONDS))
        .aggregate((Count, Sum::of(|(_, price): &(u64, u64)| *price)))
}

/// W2: per auction and sliding 10 s window (every 2 s), the number of bids.
pub fn w2(events: &Stream<Event>) -> Stream<WindowResult<u64, u64>> {
    auction_of_each_bid(events)
        .key_by(|auction| *auction)
        .window(Sliding::of(TEN_SECONDS, TWO_SECONDS))
        .aggregate(Count)
}
