//! The Nexmark queries and two window workloads, each a function from the
//! event stream to its result stream, built only on Tideline's public API.
//!
//! Semantics follow Flink's Nexmark SQL (flink-nexmark), with event time
//! from each event's `date_time`:
//!
//! | query | what it computes |
//! |---|---|
//! | [`q0`] | every bid, unchanged (pass-through) |
//! | [`q1`] | every bid with its price in euro cents (`price * 908 / 1000`) |
//! | [`q2`] | `(auction, price)` of bids with `auction % 123 == 0` |
//! | [`q3`] | sellers in OR, ID or CA with their auctions in category 10 (incremental join) |
//! | [`q5`] | per sliding 10 s window (every 2 s), the auctions with the most bids |
//! | [`q7`] | per tumbling 10 s window, the bids with the highest price |
//! | [`q8`] | persons who opened an auction in the tumbling 10 s window they registered in |
//! | [`q11`] | bids per bidder session (gap 10 s) |
//! | [`w1`] | per auction, tumbling 10 s: bid count and price sum |
//! | [`w2`] | per auction, sliding 10 s every 2 s: bid count |
//!
//! Results that belong to a window carry the window's last millisecond as
//! their timestamp, so a sink can tell how long after the window closed the
//! result arrived.

mod joins;
mod selection;
mod windows;

pub use joins::{q3, q8, NewUser, SellerAuction};
pub use selection::{q0, q1, q2};
pub use windows::{q11, q5, q7, w1, w2, BidderSession, HighestBid, HotItem};

use tideline::prelude::*;

use crate::event::{Auction, Bid, Event, Person};

/// The bids of an event stream.
pub fn bids(events: &Stream<Event>) -> Stream<Bid> {
    events.flat_map(|e| match e {
        Event::Bid(b) => Some(b),
        _ => None,
    })
}

/// The persons of an event stream.
pub fn persons(events: &Stream<Event>) -> Stream<Person> {
    events.flat_map(|e| match e {
        Event::Person(p) => Some(p),
        _ => None,
    })
}

/// The auctions of an event stream.
pub fn auctions(events: &Stream<Event>) -> Stream<Auction> {
    events.flat_map(|e| match e {
        Event::Auction(a) => Some(a),
        _ => None,
    })
}
