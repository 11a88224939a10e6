//! Nexmark's three event types, as Tideline records.
//!
//! The fields are those of the `nexmark` crate (and of Flink's Nexmark
//! tables); timestamps are epoch milliseconds as `i64`, ids and prices `u64`.
//! Text fields are [`Text`], a shared immutable string: copying an event
//! through the pipeline (a source replaying pre-generated events, a window
//! keeping a bid) bumps a reference count instead of copying bytes.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An immutable, cheaply cloned string (serialized as a plain string).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Text(Arc<str>);

impl Text {
    /// The text as `&str`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self(Arc::from(s))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(Arc::from(s))
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

/// A person registering (a seller or bidder).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Person {
    /// Unique person id.
    pub id: u64,
    /// Full name.
    pub name: Text,
    /// E-mail address.
    pub email_address: Text,
    /// Credit card number.
    pub credit_card: Text,
    /// US city (lower case).
    pub city: Text,
    /// US state, two lower-case letters.
    pub state: Text,
    /// Event time, epoch milliseconds.
    pub date_time: i64,
    /// Padding to the configured average size.
    pub extra: Text,
}

/// An item put up for auction.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Auction {
    /// Unique auction id.
    pub id: u64,
    /// Item name.
    pub item_name: Text,
    /// Item description.
    pub description: Text,
    /// Initial bid, in cents.
    pub initial_bid: u64,
    /// Reserve price, in cents.
    pub reserve: u64,
    /// Event time, epoch milliseconds.
    pub date_time: i64,
    /// When the auction closes, epoch milliseconds.
    pub expires: i64,
    /// Id of the selling [`Person`].
    pub seller: u64,
    /// Category id.
    pub category: u64,
    /// Padding to the configured average size.
    pub extra: Text,
}

/// A bid on an auction.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bid {
    /// Id of the [`Auction`] bid on.
    pub auction: u64,
    /// Id of the bidding [`Person`].
    pub bidder: u64,
    /// Price, in cents.
    pub price: u64,
    /// Channel the bid came through.
    pub channel: Text,
    /// URL the bid came from.
    pub url: Text,
    /// Event time, epoch milliseconds.
    pub date_time: i64,
    /// Padding to the configured average size.
    pub extra: Text,
}

/// One Nexmark event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Event {
    /// A new person.
    Person(Person),
    /// A new auction.
    Auction(Auction),
    /// A bid.
    Bid(Bid),
}

impl Event {
    /// Event time, epoch milliseconds.
    pub fn date_time(&self) -> i64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }

    /// The bid, if this is one.
    pub fn as_bid(&self) -> Option<&Bid> {
        match self {
            Event::Bid(b) => Some(b),
            _ => None,
        }
    }

    /// The person, if this is one.
    pub fn as_person(&self) -> Option<&Person> {
        match self {
            Event::Person(p) => Some(p),
            _ => None,
        }
    }

    /// The auction, if this is one.
    pub fn as_auction(&self) -> Option<&Auction> {
        match self {
            Event::Auction(a) => Some(a),
            _ => None,
        }
    }
}

/// Saturating conversion: the generator's ids and timestamps fit in 63 bits.
fn int(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

fn id(v: usize) -> u64 {
    v as u64
}

impl From<nexmark::event::Event> for Event {
    fn from(e: nexmark::event::Event) -> Self {
        match e {
            nexmark::event::Event::Person(p) => Event::Person(Person {
                id: id(p.id),
                name: p.name.into(),
                email_address: p.email_address.into(),
                credit_card: p.credit_card.into(),
                city: p.city.into(),
                state: p.state.into(),
                date_time: int(p.date_time),
                extra: p.extra.into(),
            }),
            nexmark::event::Event::Auction(a) => Event::Auction(Auction {
                id: id(a.id),
                item_name: a.item_name.into(),
                description: a.description.into(),
                initial_bid: id(a.initial_bid),
                reserve: id(a.reserve),
                date_time: int(a.date_time),
                expires: int(a.expires),
                seller: id(a.seller),
                category: id(a.category),
                extra: a.extra.into(),
            }),
            nexmark::event::Event::Bid(b) => Event::Bid(Bid {
                auction: id(b.auction),
                bidder: id(b.bidder),
                price: id(b.price),
                channel: b.channel.into(),
                url: b.url.into(),
                date_time: int(b.date_time),
                extra: b.extra.into(),
            }),
        }
    }
}
