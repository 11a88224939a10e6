//! Joins of persons and auctions: q3 (incremental, unbounded state) and q8
//! (per tumbling window).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tideline::prelude::*;

use super::{auctions, persons};
use crate::event::{Auction, Event, Person, Text};

/// q3's result: a seller in OR, ID or CA and one of their category-10 auctions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SellerAuction {
    /// Seller's name.
    pub name: Text,
    /// Seller's city.
    pub city: Text,
    /// Seller's state.
    pub state: Text,
    /// The auction's id.
    pub auction: u64,
}

/// The part of a seller q3 outputs.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Seller {
    name: Text,
    city: Text,
    state: Text,
}

const SELLER: ValueStateDescriptor<Seller> = ValueStateDescriptor::new("seller");
const WAITING: ListStateDescriptor<u64> = ListStateDescriptor::new("waiting_auctions");

/// Joins a seller's auctions with the seller, whichever arrives first: an
/// auction before its seller waits in list state; the seller is kept for
/// the auctions after it.
#[derive(Clone, Debug)]
struct IncrementalJoin;

impl KeyedProcessFunction<u64, Either<Person, Auction>, SellerAuction> for IncrementalJoin {
    fn process_element(
        &mut self,
        value: Either<Person, Auction>,
        ctx: &mut ProcessContext<'_, u64, SellerAuction>,
    ) -> Result<()> {
        match value {
            Either::Left(p) => {
                let seller = Seller {
                    name: p.name().into(),
                    city: p.city().into(),
                    state: p.state().into(),
                };
                let waiting = ctx.list_state(&WAITING)?.take();
                for auction in waiting {
                    ctx.collect(joined(&seller, auction));
                }
                ctx.value_state(&SELLER)?.set(seller);
            }
            Either::Right(a) => {
                let found = ctx.value_state(&SELLER)?.get().map(|s| joined(s, a.id));
                match found {
                    Some(result) => ctx.collect(result),
                    None => ctx.list_state(&WAITING)?.push(a.id),
                }
            }
        }
        Ok(())
    }
}

fn joined(seller: &Seller, auction: u64) -> SellerAuction {
    SellerAuction {
        name: seller.name.clone(),
        city: seller.city.clone(),
        state: seller.state.clone(),
        auction,
    }
}

/// q3, local item suggestion: for every auction in category 10 whose seller
/// lives in Oregon, Idaho or California, the seller's name, city and state
/// and the auction id. A regular (not windowed) join: sellers are kept for
/// the whole run, as in Flink's q3.
pub fn q3(events: &Stream<Event>) -> Stream<SellerAuction> {
    let sellers = persons(events)
        .filter(|p| matches!(p.state(), "or" | "id" | "ca"))
        .map(Either::<Person, Auction>::Left);
    let items = auctions(events)
        .filter(|a| a.category == 10)
        .map(Either::<Person, Auction>::Right);
    sellers
        .union(&items)
        .key_by(|e| match e {
            Either::Left(p) => p.id,
            Either::Right(a) => a.seller,
        })
        .process(IncrementalJoin)
}

/// q8's result: a person who opened an auction in the window they registered in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NewUser {
    /// Person id.
    pub id: u64,
    /// Person name.
    pub name: Text,
    /// Start of the 10 s window, epoch milliseconds.
    pub window_start: i64,
}

/// Per person id and window: the person (if they registered in it) and
/// whether they opened an auction in it. Only that is kept, not the records.
#[derive(Clone, Debug)]
struct PersonAndAuction;

impl AggregateFunction<Either<Person, Auction>> for PersonAndAuction {
    type Acc = (Option<Text>, bool);
    type Out = (Option<Text>, bool);

    fn create(&self) -> Self::Acc {
        (None, false)
    }

    fn add(&self, acc: &mut Self::Acc, value: Either<Person, Auction>) {
        match value {
            Either::Left(p) => acc.0 = Some(p.name().into()),
            Either::Right(_) => acc.1 = true,
        }
    }

    fn merge(&self, acc: &mut Self::Acc, other: &Self::Acc) {
        if acc.0.is_none() {
            acc.0.clone_from(&other.0);
        }
        acc.1 |= other.1;
    }

    fn result(&self, acc: Self::Acc) -> Self::Out {
        acc
    }
}

/// q8, monitor new users: persons who opened an auction within the same
/// tumbling 10 s window they registered in (a window join of persons and
/// auctions on `person.id = auction.seller`; like Flink's plan, each side
/// is reduced per window first, so one row per person and window).
pub fn q8(events: &Stream<Event>) -> Stream<NewUser> {
    let people = persons(events).map(Either::<Person, Auction>::Left);
    let sellers = auctions(events).map(Either::<Person, Auction>::Right);
    people
        .union(&sellers)
        .key_by(|e| match e {
            Either::Left(p) => p.id,
            Either::Right(a) => a.seller,
        })
        .window(Tumbling::of(Duration::from_secs(10)))
        .aggregate_with(
            PersonAndAuction,
            |id: &u64,
             info: &WindowInfo,
             (name, opened): (Option<Text>, bool),
             out: &mut tideline::window::WindowCollector<'_, NewUser>| {
                if let (Some(name), true) = (name, opened) {
                    out.collect(NewUser {
                        id: *id,
                        name,
                        window_start: info.window.start,
                    });
                }
                Ok(())
            },
        )
}
