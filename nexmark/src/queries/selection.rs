//! Stateless queries: pass-through, projection, selection.

use tideline::prelude::*;

use super::bids;
use crate::event::{Bid, Event};

/// q0: every bid, unchanged. Measures the engine's per-record overhead.
pub fn q0(events: &Stream<Event>) -> Stream<Bid> {
    bids(events)
}

/// q1: every bid with its price converted from dollar to euro cents
/// (`price * 908 / 1000`, rounded down: Flink's `0.908 * price` in integers).
pub fn q1(events: &Stream<Event>) -> Stream<Bid> {
    bids(events).map(|mut b| {
        b.price = b.price * 908 / 1000;
        b
    })
}

/// q2: `(auction, price)` of the bids on auctions whose id is a multiple of 123.
pub fn q2(events: &Stream<Event>) -> Stream<(u64, u64)> {
    events.flat_map(|e| match e {
        Event::Bid(b) if b.auction % 123 == 0 => Some((b.auction, b.price)),
        _ => None,
    })
}
