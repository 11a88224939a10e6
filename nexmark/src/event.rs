//! Nexmark's three event types, as Tideline records.
//!
//! The fields are those of the `nexmark` crate (and of Flink's Nexmark
//! tables); timestamps are epoch milliseconds as `i64`, ids and prices `u64`.
//! An event's text fields (names, URLs, the `extra` padding) sit together in
//! one shared allocation ([`Shared`]), read through accessors such as
//! [`Bid::channel`]: copying an event through the pipeline (a source
//! replaying pre-generated events, a window keeping a bid) bumps one
//! reference count instead of copying strings, and records stay small
//! (a [`Bid`] is 40 bytes), so a core moves more of them per second.

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

/// An immutable value shared by reference count (serialized as the value).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Shared<T>(Arc<T>);

impl<T> Shared<T> {
    /// Shares `value`.
    pub fn new(value: T) -> Self {
        Self(Arc::new(value))
    }

    /// Asks the CPU to bring the shared value (and its reference count)
    /// into the cache. A clone's atomic increment waits for its cache miss
    /// and keeps later loads from overtaking it, so replaying readers
    /// prefetch values a few records ahead of cloning them.
    fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let value = Arc::as_ptr(&self.0).cast::<i8>();
            // SAFETY: a prefetch is a hint that never dereferences nor
            // faults, and SSE is in x86_64's baseline. The counts sit just
            // before the value.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(value.wrapping_sub(16));
                _mm_prefetch::<_MM_HINT_T0>(value);
            }
        }
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: fmt::Debug> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shared<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Self::new)
    }
}

/// A person's text fields.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PersonText {
    /// Full name.
    pub name: String,
    /// E-mail address.
    pub email_address: String,
    /// Credit card number.
    pub credit_card: String,
    /// US city (lower case).
    pub city: String,
    /// US state, two lower-case letters.
    pub state: String,
    /// Padding to the configured average size.
    pub extra: String,
}

/// A person registering (a seller or bidder).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Person {
    /// Unique person id.
    pub id: u64,
    /// Event time, epoch milliseconds.
    pub date_time: i64,
    /// Name, address, card, padding.
    pub text: Shared<PersonText>,
}

impl Person {
    /// Full name.
    pub fn name(&self) -> &str {
        &self.text.name
    }
    /// US city (lower case).
    pub fn city(&self) -> &str {
        &self.text.city
    }
    /// US state, two lower-case letters.
    pub fn state(&self) -> &str {
        &self.text.state
    }
}

/// An auction's text fields.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AuctionText {
    /// Item name.
    pub item_name: String,
    /// Item description.
    pub description: String,
    /// Padding to the configured average size.
    pub extra: String,
}

/// An item put up for auction.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Auction {
    /// Unique auction id.
    pub id: u64,
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
    /// Item name, description, padding.
    pub text: Shared<AuctionText>,
}

/// A bid's text fields.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BidText {
    /// Channel the bid came through.
    pub channel: String,
    /// URL the bid came from.
    pub url: String,
    /// Padding to the configured average size.
    pub extra: String,
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
    /// Event time, epoch milliseconds.
    pub date_time: i64,
    /// Channel, URL, padding.
    pub text: Shared<BidText>,
}

impl Bid {
    /// Channel the bid came through.
    pub fn channel(&self) -> &str {
        &self.text.channel
    }
    /// URL the bid came from.
    pub fn url(&self) -> &str {
        &self.text.url
    }
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
    /// Starts bringing the event's shared text into the cache, ahead of a clone.
    pub(crate) fn prefetch(&self) {
        match self {
            Event::Person(p) => p.text.prefetch(),
            Event::Auction(a) => a.text.prefetch(),
            Event::Bid(b) => b.text.prefetch(),
        }
    }

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
                date_time: int(p.date_time),
                text: Shared::new(PersonText {
                    name: p.name,
                    email_address: p.email_address,
                    credit_card: p.credit_card,
                    city: p.city,
                    state: p.state,
                    extra: p.extra,
                }),
            }),
            nexmark::event::Event::Auction(a) => Event::Auction(Auction {
                id: id(a.id),
                initial_bid: id(a.initial_bid),
                reserve: id(a.reserve),
                date_time: int(a.date_time),
                expires: int(a.expires),
                seller: id(a.seller),
                category: id(a.category),
                text: Shared::new(AuctionText {
                    item_name: a.item_name,
                    description: a.description,
                    extra: a.extra,
                }),
            }),
            nexmark::event::Event::Bid(b) => Event::Bid(Bid {
                auction: id(b.auction),
                bidder: id(b.bidder),
                price: id(b.price),
                date_time: int(b.date_time),
                text: Shared::new(BidText {
                    channel: b.channel,
                    url: b.url,
                    extra: b.extra,
                }),
            }),
        }
    }
}
